"""Qwen2.5-VL (Qwen/Qwen2.5-VL-3B/7B-Instruct): a transformers family."""

from __future__ import annotations

from remoteglm.errors import RemoteGLMError
from remoteglm.families.hf import HFFamily
from remoteglm.registry import register


class Qwen25VL(HFFamily):
    def box_codec(self, path=None, *, min_pixels=None, max_pixels=None):
        """Absolute pixels of the image AFTER the processor's resize, as JSON ``[{"bbox_2d": [x1, y1,
        x2, y2], "label": ...}]`` (QwenLM/Qwen2.5-VL cookbooks/spatial_understanding.ipynb; Qwen's team
        in QwenLM/Qwen3-VL#1427: "根据实际传入模型的图片大小（即模型smart_resize之后的图片大小）相应调整你的gt
        bbox"). The resize is the run's: its min/max pixels over the folder's own."""
        from remoteglm.box_codec import JsonCodec
        from remoteglm.model.hf_folder import folder_pixel_range, resized_size

        lo, hi = folder_pixel_range(path) if path is not None else (None, None)
        lo, hi = min_pixels or lo, max_pixels or hi
        if not lo and not hi:
            raise RemoteGLMError(f"{self.label} boxes are pixels of the resized image: give the model folder "
                                 "or its min/max pixels")
        lo, hi = lo or self.published_pixels[0], hi or self.published_pixels[1]  # the one not given: as published
        if lo > hi:
            raise RemoteGLMError(f"min_pixels {lo} is more than max_pixels {hi}")
        return JsonCodec(frame=lambda w, h: resized_size(w, h, lo, hi, self),
                         settings={"min_pixels": lo, "max_pixels": hi})

    def tiny_config(self, ids, vocab, text, vision, size):
        from transformers import Qwen2_5_VLConfig

        text = dict(vocab_size=vocab, rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
                    bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                    **text)
        vision = dict(fullatt_block_indexes=[1], window_size=112, **vision)
        if size == "full":
            text, vision = {**text, **self.full_sizes["text"]}, self.full_sizes["vision"]
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                                video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                                vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)

    def tiny_image_processor(self, min_pixels, max_pixels):
        from transformers import Qwen2VLImageProcessorPil

        return Qwen2VLImageProcessorPil(size={"shortest_edge": min_pixels, "longest_edge": max_pixels})


FAMILY = register(Qwen25VL(
    name="qwen2_5_vl", label="Qwen2.5-VL", model_class="Qwen2_5_VLForConditionalGeneration",
    image_token="<|image_pad|>", stop_tokens=("<|im_end|>", "<|endoftext|>"),
    specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
              "<|video_pad|>"),
    eos_token="<|im_end|>", template_file="chat_template.json", tiny_dir="checkpoints/qwen2.5-vl-tiny",
    published_pixels=(3136, 12845056),  # preprocessor_config.json of Qwen/Qwen2.5-VL-7B-Instruct
    # config.json of Qwen/Qwen2.5-VL-7B-Instruct
    full_sizes=dict(
        text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, max_position_embeddings=128000, vocab_size=152064,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
        vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                    fullatt_block_indexes=[7, 15, 23, 31], window_size=112)),
))
