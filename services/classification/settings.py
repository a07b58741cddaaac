from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from modelfleet.settings import EncoderServiceSettings


class ClassificationSettings(EncoderServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELFLEET_CLASSIFICATION_", extra="ignore", frozen=True
    )

    port: int = Field(default=3004, ge=1, le=65535)
    backend: Literal["auto", "embedding", "sequence-classification"] = Field(
        default="auto",
        description="auto: a *ForSequenceClassification checkpoint uses its own head, "
        "anything else is an embedding model with the embedding classifier",
    )
    tasks_dir: Path | None = Field(default=None, description="labelled examples per task")
    max_labels: int = Field(default=64, ge=2, le=1024)
    flavour: Literal[
        "auto", "float", "torch-int8", "onnx", "onnx-int8-dynamic", "onnx-int8-static"
    ] = Field(
        default="auto",
        description="runtime of a sequence-classification model: auto = the fastest flavour on "
        "this machine among those its model card records within the quality budget; or one "
        "named flavour (`modelfleet export` makes them)",
    )
