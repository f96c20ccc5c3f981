"""Hand-written realistic data for the faithfulness checks (no code of the project involved).

``SAMPLE_PARAGRAPHS``: one merged paragraph per image of the bundled sample
(data/sample/dataset_sample_zh.json), written by hand the way a careful LLM merges the five
Chinese captions: repeats said once, the captions' words kept, some re-worded.

``REAL``: images of the real UCM / Sydney English captions (/work/shared/data, copied here),
each with a hand translation of its distinct sentences and a hand-merged paragraph.
"""

SAMPLE_PARAGRAPHS = {
    "images/s2_farmland.png": "有许多不同颜色的农田，一些是绿色的，一些是浅褐色的，形状不规则；"
                              "深色的树木带把农田分隔开，一条笔直的道路穿过农田。",
    "images/s2_town.png": "一个小城镇里有许多建筑，主要道路旁边有一些白色的大型建筑，几条道路穿过城镇，"
                          "房屋被绿色的树木环绕，城镇周围有农田和深色的森林。",
    "images/s2_ocean.png": "这是一片蓝色的海洋，覆盖了整幅图像，图像中没有陆地；海面上有许多白色的小点，还可以看到细小的波纹。",
    "images/s2_coastline.png": "一条长长的白色海滩位于海洋和陆地之间，海岸线几乎是笔直的；右侧的海洋是浅蓝色的，"
                               "海面上可以看到细小的波纹，左侧是一片有蜿蜒水道的深色沼泽。",
    "images/s2_marsh.png": "许多蜿蜒的水道穿过一大片深红褐色的沼泽，其中几条较宽的水道在沼泽中分叉；"
                           "沼泽的右侧边缘有一条白色的海滩，海滩的右侧是海洋。",
    "images/s2_inlet.png": "一条蜿蜒的河流流经农田，河流左侧较宽，右侧较窄，两岸有许多农田，河岸上长着深色的树木，"
                           "右下方有一些房屋和道路。",
    "images/OSBS_029.tif": "这个区域散布着许多绿色的树木，有些地方稀疏，有些地方茂密，树木投下了深色的阴影；"
                           "树木之间可以看到浅灰色的裸露地面，地面上有一些白色的斑块。",
    "images/SOAP_031.png": "许多绿色的树木组成了一片茂密的森林，树木投下了长长的深色阴影；地面上躺着几棵倒下的树，"
                           "一些枯树呈灰色，左上方有一些绿色的草地。",
    "images/SOAP_061.png": "绿色的地面上散布着许多树，左下方的树木比较茂密，其中有几棵灰色的枯树；"
                           "地面上躺着许多倒下的树，树木在地面上投下深色的阴影。",
    "images/YELL_road.png": "一条弯曲的道路穿过森林，路中间有一条黄线，两侧有许多深绿色的树，"
                            "路旁有一条绿色的草带，右侧的地面上躺着一些倒下的树。",
}

# (dataset, image, [(English, hand translation) for each distinct sentence], hand-merged paragraph)
REAL = [
    ("UCM", "551.tif", [
        ("This is a chaparral", "这是一片灌木丛。"),
        ("Lots of plants scattered on the ground.", "地面上散布着许多植物。"),
        ("Lots of plants scattered in the loess ground", "黄土地上散布着许多植物。"),
        ("There are some grey plants scattered on the ground", "地面上散布着一些灰色的植物。"),
        ("Some grey plants are scattered in the loess ground", "一些灰色的植物散布在黄土地上。"),
    ], "这是一片灌木丛，黄土地面上散布着许多植物，其中一些植物是灰色的。"),
    ("UCM", "259.tif", [
        ("This is a old baseball diamond", "这是一个旧棒球场。"),
        ("It is a small baseball diamond with sand and grass", "这是一个有沙子和草的小棒球场。"),
        ("It is a small old baseball diamond", "这是一个又小又旧的棒球场。"),
    ], "这是一个又小又旧的棒球场，场上有沙子和草。"),
    ("UCM", "1045.tif", [
        ("Lots of boats docked at the harbor and the water is deep blue", "许多船停靠在港口，水是深蓝色的。"),
        ("Lots of boats docked in lines at the harbor", "许多船成排停靠在港口。"),
        ("Many boats docked in lines at the harbor and the water is deep blue", "许多船成排停靠在港口，水是深蓝色的。"),
        ("Many boats docked in lines at the harbor and some positions are free", "许多船成排停靠在港口，还有一些空位。"),
        ("Lots of boats docked neatly at the harbor and the boats are closed to each other",
         "许多船整齐地停靠在港口，船只彼此紧挨着。"),
    ], "许多船整齐地成排停靠在港口，船只彼此紧挨着，还有一些空位，水是深蓝色的。"),
    ("UCM", "483.tif", [
        ("There are some buildings with white and grey roofs", "有一些屋顶为白色和灰色的建筑。"),
        ("Some buildings with white and grey roofs", "一些带有白色和灰色屋顶的建筑。"),
        ("There are some buildings with cars parked beside them", "一些建筑旁边停着汽车。"),
        ("Buildings and cars", "建筑和汽车。"),
    ], "有一些带有白色和灰色屋顶的建筑，建筑旁边停着汽车。"),
    ("UCM", "2030.tif", [
        ("Two tennis courts next to a stadium with a road surrounded", "两个网球场紧挨着一座体育场，周围有一条道路。"),
        ("Two tennis courts are next to a stadium with a road beside", "两个网球场紧挨着一座体育场，旁边有一条道路。"),
        ("There are two tennis courts next to a stadium and surrounded by some plants",
         "两个网球场紧挨着一座体育场，周围环绕着一些植物。"),
        ("There are two tennis courts next to a stadium with a road and some plants beside",
         "两个网球场紧挨着一座体育场，旁边有一条道路和一些植物。"),
    ], "两个网球场紧挨着一座体育场，旁边有一条道路，周围环绕着一些植物。"),
    ("UCM", "1842.tif", [
        ("A house is surrounded by withered plants and lawn in the sparse residential area",
         "在稀疏住宅区中，一栋房屋被枯萎的植物和草坪环绕。"),
        ("This is a sparse residential area with a house surrounded by withered plants and lawn",
         "这是一个稀疏住宅区，一栋房屋被枯萎的植物和草坪环绕。"),
        ("A house is surrounded by withered plants in the sparse residential area", "在稀疏住宅区中，一栋房屋被枯萎的植物环绕。"),
        ("A house with some cars parked beside is in the sparse residential area", "稀疏住宅区中有一栋房屋，旁边停着一些汽车。"),
        ("A house with plants surrounded and some cars parked beside", "一栋房屋周围有植物，旁边停着一些汽车。"),
    ], "这是一个稀疏住宅区，一栋房屋被枯萎的植物和草坪环绕，旁边停着一些汽车。"),
    ("Sydney", "138.tif", [
        ("Lots of houses arranged neatly and a piece of lawn in the lower right corner", "许多房屋排列整齐，右下角有一片草坪。"),
        ("A residential area with houses arranged neatly and some roads go through this area",
         "一个房屋排列整齐的住宅区，一些道路穿过这个区域。"),
        ("A town with many houses arranged neatly while a piece of lawn in the lower right corner",
         "一个城镇里有许多排列整齐的房屋，右下角有一片草坪。"),
        ("A residential area with houses arranged neatly while many plants in the roadside",
         "一个房屋排列整齐的住宅区，路边有许多植物。"),
        ("This is a residential area with many houses arranged neatly and a grassland lower right corner",
         "这是一个住宅区，许多房屋排列整齐，右下角有一片草地。"),
    ], "这是一个住宅区，许多房屋排列整齐，一些道路穿过这个区域，路边有许多植物，右下角有一片草坪。"),
    ("Sydney", "583.tif", [
        ("Some curving runways with some marking lines on it while some lawns beside", "一些弯曲的跑道上有一些标线，旁边有一些草坪。"),
        ("There are some marking lines on the runways while some lawns beside", "跑道上有一些标线，旁边有一些草坪。"),
        ("Some curved ruwnays with many marking lines on it while some lawns beside", "一些弯曲的跑道上有许多标线，旁边有一些草坪。"),
    ], "一些弯曲的跑道上有许多标线，跑道旁边有一些草坪。"),
    ("Sydney", "65.tif", [
        ("Lots of houses with red and orange roofs arranged neatly", "许多红色和橙色屋顶的房屋排列整齐。"),
        ("A residential area with houses arranged neatly and some roads go through this area",
         "一个房屋排列整齐的住宅区，一些道路穿过这个区域。"),
        ("A town with many houses densely arranged and some crossroads in the middle",
         "一个城镇里有许多密集排列的房屋，中间有一些十字路口。"),
        ("A residential area with houses arranged in lines and some crossroads in the middle",
         "一个住宅区里房屋成排排列，中间有一些十字路口。"),
        ("This is a residential area with houses densely arranged with some crossroads in the middle",
         "这是一个房屋密集排列的住宅区，中间有一些十字路口。"),
    ], "这是一个城镇里的住宅区，许多红色和橙色屋顶的房屋密集而整齐地成排排列，一些道路穿过这个区域，中间有一些十字路口。"),
    ("Sydney", "262.tif", [
        ("An airplane parked on the airport with a runway beside", "一架飞机停在机场上，旁边有一条跑道。"),
        ("A big airport with only a white airport parked on", "一个大机场上只停着一架白色的飞机。"),
        ("There is a white airplane parked on the airport with a runway beside", "一架白色的飞机停在机场上，旁边有一条跑道。"),
        ("A white airplane parked on the big airport", "一架白色的飞机停在大机场上。"),
        ("There is a white airplane parked on the airport", "机场上停着一架白色的飞机。"),
    ], "一个大机场上只停着一架白色的飞机，旁边有一条跑道。"),
    ("Sydney", "121.tif", [
        ("Lots of houses with red and orange roofs arranged densely and a piece of lawn beside",
         "许多红色和橙色屋顶的房屋密集排列，旁边有一片草坪。"),
        ("A residential area with houses arranged neatly and some roads go through this area",
         "一个房屋排列整齐的住宅区，一些道路穿过这个区域。"),
        ("A big piece of lawn and a residential area are separated by a road", "一大片草坪和一个住宅区被一条道路隔开。"),
        ("A residential area with many houses arranged neatly and a big piece of lawn beside",
         "一个住宅区里有许多排列整齐的房屋，旁边有一大片草坪。"),
        ("A residential area with houses densely arranged and a big piece of grassland beside",
         "一个房屋密集排列的住宅区，旁边有一大片草地。"),
    ], ("一个住宅区里有许多红色和橙色屋顶的房屋，排列密集而整齐，一些道路穿过这个区域，"
        "一条道路把住宅区和旁边的一大片草坪隔开。")),
    ("Sydney", "508.tif", [
        ("An industrial area with many buildings arranged densely", "一个工业区里有许多密集排列的建筑。"),
        ("There are some buildings arranged densely in the residential area", "住宅区里有一些密集排列的建筑。"),
        ("Many buildings densely arranged in the residential area while some roads go though",
         "住宅区里有许多密集排列的建筑，一些道路穿过其中。"),
        ("Some roads go through the industrial area with many white buildings arranged densely",
         "一些道路穿过工业区，工业区里有许多密集排列的白色建筑。"),
    ], "工业区和住宅区里有许多密集排列的白色建筑，一些道路穿过其中。"),
]
