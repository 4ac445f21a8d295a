"""One `ServeConfig` describes the whole service: the artifacts, each deployment's resources, the HTTP
address, the limits; the Serve config YAML for `serve deploy` is written from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from clipsam.engine.image_io import DEFAULT_MAX_PIXELS

APP_NAME = "clipsam"
APP_BUILDER = "clipsam.serve.app:app_builder"  # the import path `serve deploy` loads the application from
STAGES = ("ingress", "sclip", "encoder", "decoder")
DEPLOYMENT_NAMES = {
    "ingress": "Ingress",
    "sclip": "SclipStage",
    "encoder": "Sam2Encoder",
    "decoder": "Sam2Decoder",
}


@dataclass(frozen=True)
class StageResources:
    """Replicas and resources of one deployment.

    num_cpus / num_gpus: Ray's logical resources per replica (fractions let several replicas share a core).
    autoscaling: None (fixed num_replicas) or Serve's autoscaling_config fields, e.g.
        {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2}.
    max_ongoing_requests: requests one replica holds at once (the decoder needs as many as it batches).
    max_replicas_per_node: None, or a cap that spreads replicas over nodes.
    """

    num_replicas: int = 1
    num_cpus: float = 0.5
    num_gpus: float = 0.0
    autoscaling: dict | None = None
    max_ongoing_requests: int = 8
    max_replicas_per_node: int | None = None

    def deployment_options(self) -> dict:
        """Keyword arguments of `Deployment.options` for these resources."""
        options = {
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "max_ongoing_requests": self.max_ongoing_requests,
        }
        if self.autoscaling is not None:
            options["autoscaling_config"] = dict(self.autoscaling)
        else:
            options["num_replicas"] = self.num_replicas
        if self.max_replicas_per_node is not None:
            options["max_replicas_per_node"] = self.max_replicas_per_node
        return options


@dataclass(frozen=True)
class ServeConfig:
    """The service. Byte and pixel limits apply per request; cache_bytes per stage replica.

    cache_bytes: bound of each encoder replica's image cache (SCLIP patch features in the SCLIP stage, SAM2
        image embeddings in the encoder), keyed by the image's content hash.
    max_pixels: larger images are refused with 413; max_body_bytes: larger request bodies too.
    proxy_location: where Serve runs HTTP proxies: "EveryNode" (a cluster of machines) or "HeadOnly".
    request_timeout_s: a request not answered by then gets 504.
    decoder_batch_size / decoder_batch_wait_s: `@serve.batch` of the decoder (prompts of concurrent requests
        on the same image share decoder calls).
    overlap_encoders: start the SAM2 encoder while SCLIP runs (it is independent of the prompts); off, it
        runs after SCLIP and only when there are prompts (as `Pipeline.segment` does).
    """

    artifacts: str
    backend: str = "onnxruntime"
    precision: str = "exact"
    providers: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    proxy_location: str = "EveryNode"
    ingress: StageResources = StageResources(num_cpus=0.1, max_ongoing_requests=64)
    sclip: StageResources = StageResources()
    encoder: StageResources = StageResources()
    decoder: StageResources = StageResources(max_ongoing_requests=16)
    cache_bytes: int = 1 << 30
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_body_bytes: int = 64 << 20
    request_timeout_s: float = 120.0
    decoder_batch_size: int = 8
    decoder_batch_wait_s: float = 0.005
    overlap_encoders: bool = True
    app_name: str = APP_NAME
    extra: dict = field(default_factory=dict)

    def stage(self, name: str) -> StageResources:
        assert name in STAGES, name
        return getattr(self, name)

    def with_replicas(self, replicas: int) -> ServeConfig:
        """The same service with `replicas` replicas of each model stage (SCLIP, encoder, decoder)."""
        return replace(
            self,
            sclip=replace(self.sclip, num_replicas=replicas),
            encoder=replace(self.encoder, num_replicas=replicas),
            decoder=replace(self.decoder, num_replicas=replicas),
        )

    def total_cpus(self) -> float:
        """Logical CPUs all replicas ask for (autoscaled stages counted at their maximum)."""
        total = 0.0
        for name in STAGES:
            stage = self.stage(name)
            count = stage.autoscaling["max_replicas"] if stage.autoscaling else stage.num_replicas
            total += count * stage.num_cpus
        return total

    def to_args(self) -> dict:
        """JSON-able form (the `args` of the Serve config file); `from_args` reads it back."""
        return asdict(self)

    @classmethod
    def from_args(cls, args: dict) -> ServeConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(args) - known
        if unknown:
            raise ValueError(f"unknown service settings: {', '.join(sorted(unknown))}")
        values = dict(args)
        for name in STAGES:
            if isinstance(values.get(name), dict):
                values[name] = StageResources(**values[name])
        return cls(**values)


def serve_config_record(config: ServeConfig) -> dict:
    """The Serve config file (`serve deploy FILE`) that runs the same application as `clipsam serve`."""
    deployments = []
    for name in STAGES:
        options = config.stage(name).deployment_options()
        deployments.append({"name": DEPLOYMENT_NAMES[name], **options})
    return {
        "proxy_location": config.proxy_location,
        "http_options": {"host": config.host, "port": config.port},
        "applications": [
            {
                "name": config.app_name,
                "route_prefix": "/",
                "import_path": APP_BUILDER,
                "args": config.to_args(),
                "deployments": deployments,
            }
        ],
    }


def write_serve_config(config: ServeConfig, path: Path | str) -> None:
    """Write the Serve config YAML atomically."""
    import yaml

    from clipsam.engine.outputs import atomic_output

    with atomic_output(path, "w") as stream:
        yaml.safe_dump(serve_config_record(config), stream, sort_keys=False)
