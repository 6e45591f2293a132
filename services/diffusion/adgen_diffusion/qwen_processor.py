"""An image-only Qwen2-VL processor loaded from a real `processor/` folder, so Qwen-Image-Edit needs no torchvision."""

# mypy: disallow-untyped-calls=False

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoImageProcessor, AutoTokenizer, ProcessorMixin, Qwen2VLProcessor

# diffusers picks a component's load method by finding these base classes in the component's module.
__all__ = ["ProcessorMixin", "Qwen2VLImageOnlyProcessor", "load_image_only_processor"]


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    """`Qwen2VLProcessor` without its video processor.

    Qwen2VLProcessor builds a Qwen2VLVideoProcessor, which needs torchvision, and the torchvision wheel for
    this torch is a multi-GB CUDA build. Edit pipelines never pass video, so dropping the video half changes
    nothing they use; being a subclass, it passes diffusers' check against model_index's Qwen2VLProcessor.
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


def load_image_only_processor(processor_dir: Path) -> Qwen2VLImageOnlyProcessor:
    """The processor of a real-layout `processor/` folder: preprocessor_config.json plus the tokenizer files.

    video_preprocessor_config.json is ignored. The image processor is the class the file names
    (Qwen2VLImageProcessorFast); without torchvision transformers falls back to Qwen2VLImageProcessorPil.
    """
    image_processor = AutoImageProcessor.from_pretrained(processor_dir)
    tokenizer = AutoTokenizer.from_pretrained(processor_dir)
    return Qwen2VLImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer)
