"""GLM-4.1V (zai-org/GLM-4.1V-9B-Thinking / -Base): a transformers family."""

from __future__ import annotations

from remoteglm.families.hf import HFFamily
from remoteglm.registry import register


class GLM41V(HFFamily):
    def box_codec(self, path=None, *, min_pixels=None, max_pixels=None):
        """``<|begin_of_box|>[[x1,y1,x2,y2]]<|end_of_box|>`` with coordinates relative to the image on
        0..1000, x = round(x_pixel / W * 1000) (zai-org's glmv-grounding skill for GLM-V; GLM-V answers
        look like "... are <|begin_of_box|>[[94,598,177,991]]<|end_of_box|>."). Independent of the
        resize, so the resolution settings do not matter."""
        from remoteglm.box_codec import BracketCodec, relative

        return BracketCodec(frame=relative(1000), open="<|begin_of_box|>", close="<|end_of_box|>")

    def pixel_kwargs(self, min_pixels, max_pixels):
        """GLM-4.1V's image processor has no min/max_pixels arguments, only ``size`` (transformers'
        ``Glm4vImageProcessorKwargs``); its values count an image as two frames, as its config does."""
        return {"size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}}

    def tiny_config(self, ids, vocab, text, vision, size):
        from transformers import Glm4vConfig

        text = dict(vocab_size=vocab, pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
                    rope_parameters={"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5,
                                     "mrope_section": [2, 1, 1]}, **text)
        vision = dict(image_size=112, **vision)
        if size == "full":
            text, vision = {**text, **self.full_sizes["text"]}, self.full_sizes["vision"]
        return Glm4vConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image|>"],
                           video_token_id=ids["<|video|>"], image_start_token_id=ids["<|begin_of_image|>"],
                           image_end_token_id=ids["<|end_of_image|>"], video_start_token_id=ids["<|begin_of_video|>"],
                           video_end_token_id=ids["<|end_of_video|>"], tie_word_embeddings=False)

    def tiny_image_processor(self, min_pixels, max_pixels):
        from transformers import Glm4vImageProcessorPil

        # its resize counts an image as two frames: twice the budget, the same tokens
        return Glm4vImageProcessorPil(size={"shortest_edge": 2 * min_pixels, "longest_edge": 2 * max_pixels})


FAMILY = register(GLM41V(
    name="glm4v", label="GLM-4.1V", model_class="Glm4vForConditionalGeneration",
    image_token="<|image|>", stop_tokens=("<|endoftext|>", "<|user|>", "<|observation|>"),
    specials=("<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
              "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>",
              "<|end_of_video|>", "<|image|>", "<|video|>"),
    frames_in_budget=2, tiny_dir="checkpoints/glm4.1v-tiny",
    video_processor="Glm4vVideoProcessor",  # zai-org/GLM-4.1V-9B-Thinking ships video_preprocessor_config.json
    # config.json of zai-org/GLM-4.1V-9B-Thinking
    full_sizes=dict(
        text=dict(hidden_size=4096, intermediate_size=13696, num_hidden_layers=40, num_attention_heads=32,
                  num_key_value_heads=2, max_position_embeddings=65536, vocab_size=151552,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5,
                                   "mrope_section": [8, 12, 12]}),
        vision=dict(depth=24, hidden_size=1536, intermediate_size=13696, num_heads=12, out_hidden_size=4096,
                    image_size=336)),
))
