"""A Qwen2-VL processor for images only, so Qwen-Image-Edit twins load without torchvision."""

# mypy: disallow-untyped-calls=False

from __future__ import annotations

from typing import Any

from transformers import ProcessorMixin, Qwen2VLProcessor

# diffusers picks a component's load method by finding these base classes in the component's module.
__all__ = ["ProcessorMixin", "Qwen2VLImageOnlyProcessor"]


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    """`Qwen2VLProcessor` without its video processor.

    transformers type-checks `video_processor` against a class it only exports when torchvision
    is installed, and the CPU torch build here cannot have torchvision. Edit pipelines never pass
    video, so dropping the video half changes nothing they use.
    """

    attributes = ["image_processor", "tokenizer"]  # noqa: RUF012 - transformers reads this class attribute

    def __init__(
        self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None, **kwargs: Any
    ) -> None:
        super(Qwen2VLProcessor, self).__init__(image_processor, tokenizer, chat_template=chat_template)
        self.image_token = getattr(tokenizer, "image_token", "<|image_pad|>")
        self.video_token = getattr(tokenizer, "video_token", "<|video_pad|>")
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
