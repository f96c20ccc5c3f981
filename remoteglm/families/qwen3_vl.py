"""Qwen3-VL (Qwen/Qwen3-VL-2B/4B/8B-Instruct): a transformers family.

Where it differs from Qwen2.5-VL: 16-pixel patches (one LLM token per 32 x 32 pixels), DeepStack
(features of early ViT layers added to the first LLM layers), 3-D rotary positions it refuses to
guess (``mm_token_type_ids`` must come with an image), and a chat template that adds no system
prompt of its own.
"""

from __future__ import annotations

from remoteglm.families.hf import HFFamily
from remoteglm.registry import register


class Qwen3VL(HFFamily):
    def box_codec(self, path=None, *, min_pixels=None, max_pixels=None):
        """Coordinates relative to the image on 0..1000, in Qwen2.5-VL's ``bbox_2d`` JSON (QwenLM/Qwen3-VL
        README: "Qwen3-VL's default coordinate system has been changed from the absolute coordinates
        used in Qwen2.5-VL to relative coordinates ranging from 0 to 1000"; cookbooks/2d_grounding.ipynb).
        Relative coordinates do not depend on the resize, so the resolution settings do not matter."""
        from remoteglm.box_codec import JsonCodec, relative

        return JsonCodec(frame=relative(1000))

    def tiny_config(self, ids, vocab, text, vision, size):
        from transformers import Qwen3VLConfig

        # head_dim defaults to 128 here, not hidden/heads; the three rotary sections share head_dim/2
        text = dict(vocab_size=vocab, head_dim=text["hidden_size"] // text["num_attention_heads"],
                    rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [4, 2, 2],
                                     "mrope_interleaved": True},
                    bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                    **text)
        # one DeepStack layer, so the tiny model takes the path the real one takes
        vision = dict(patch_size=self.patch, num_position_embeddings=256, deepstack_visual_indexes=[0], **vision)
        if size == "full":
            text, vision = {**text, **self.full_sizes["text"]}, self.full_sizes["vision"]
        return Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                             video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                             vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)

    def tiny_image_processor(self, min_pixels, max_pixels):
        from transformers import Qwen2VLImageProcessorPil

        # the budget comes in 28 x 28 cells: the same token counts at this family's 32 x 32 cells
        k = (self.patch * self.spatial_merge) ** 2 / 28 ** 2
        return Qwen2VLImageProcessorPil(size={"shortest_edge": round(min_pixels * k), "longest_edge": round(max_pixels * k)},
                                        patch_size=self.patch, merge_size=self.spatial_merge,
                                        image_mean=[0.5] * 3, image_std=[0.5] * 3)


FAMILY = register(Qwen3VL(
    name="qwen3_vl", label="Qwen3-VL", model_class="Qwen3VLForConditionalGeneration",
    image_token="<|image_pad|>", stop_tokens=("<|im_end|>", "<|endoftext|>"),
    specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
              "<|video_pad|>"),
    eos_token="<|im_end|>", patch=16, template_file="chat_template.json", tiny_dir="checkpoints/qwen3-vl-tiny",
    video_processor="Qwen3VLVideoProcessor",  # Qwen/Qwen3-VL-8B-Instruct ships video_preprocessor_config.json
    # config.json of Qwen/Qwen3-VL-8B-Instruct
    full_sizes=dict(
        text=dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                  num_key_value_heads=8, head_dim=128, max_position_embeddings=262144, vocab_size=151936,
                  rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20],
                                   "mrope_interleaved": True}),
        vision=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                    patch_size=16, num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24])),
))
