from modelfleet.app import run_server
from modelfleet.logs import configure_logging
from modelfleet.settings import load_settings
from modelfleet.tracing import configure as configure_tracing
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings


def main() -> None:
    settings = load_settings(GatewaySettings)
    configure_logging("gateway", settings.log_level, settings.log_json)
    configure_tracing("gateway", settings.otlp_endpoint, settings.trace_sample_ratio)
    # Streams may outlive a rollout's grace period; in-flight unary requests finish well within it.
    run_server(create_app(settings), settings, graceful_s=settings.shutdown_grace_s)
