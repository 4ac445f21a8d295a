"""The Serve application graph: ingress → SCLIP stage, SAM2 encoder, SAM2 decoder, each with the resources
of its `ServeConfig` entry. `app_builder` is the import path of the Serve config file (`serve deploy`)."""

from __future__ import annotations

from ray.serve import Application

from clipsam.serve.config import ServeConfig
from clipsam.serve.ingress import Ingress
from clipsam.serve.stages import Sam2Decoder, Sam2Encoder, SclipStage


def build_app(config: ServeConfig) -> Application:
    """The bound application: every deployment gets its replicas / resources / autoscaling from `config`."""
    sclip = SclipStage.options(**config.sclip.deployment_options()).bind(config)
    encoder = Sam2Encoder.options(**config.encoder.deployment_options()).bind(config)
    decoder = Sam2Decoder.options(**config.decoder.deployment_options()).bind(config)
    ingress = Ingress.options(**config.ingress.deployment_options())
    return ingress.bind(config, sclip, encoder, decoder)


def app_builder(args: dict) -> Application:
    """`import_path: clipsam.serve.app:app_builder` with `args` = ServeConfig fields (config.to_args())."""
    return build_app(ServeConfig.from_args(dict(args)))
