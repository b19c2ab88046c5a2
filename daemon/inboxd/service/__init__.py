"""Operations: sd_notify (READY, STATUS, WATCHDOG), Prometheus metrics, /healthz.

`inboxd.pipeline.service` wires these to the daemon; nothing here imports the pipeline."""

from .health import health_verdict
from .metrics import Metrics, MetricsServer
from .notify import Notifier

__all__ = ["Metrics", "MetricsServer", "Notifier", "health_verdict"]
