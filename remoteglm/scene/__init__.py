"""Whole remote-sensing scenes (GeoTIFF, COG, JPEG 2000; any size): reading by windows with a
stretch to 8-bit RGB (raster.py), boxes on the map and GeoJSON (geo.py)."""
