"""Entry point for `mitmdump -s addon/harmony.py`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harmony_filter.proxy.addon import HarmonyFilter  # noqa: E402
from harmony_filter.service.endpoints import Endpoints  # noqa: E402
from harmony_filter.service.loopback import Loopback  # noqa: E402
from harmony_filter.service.metrics import Metrics  # noqa: E402
from harmony_filter.service.redact import Redact  # noqa: E402
from harmony_filter.service.report import Report  # noqa: E402

metrics = Metrics()

# Order matters. Loopback settles listen_host before anything checks it; Endpoints answers its
# requests before HarmonyFilter could take them (so they are neither filtered nor counted);
# Metrics and Report read what HarmonyFilter recorded; Redact removes credentials last.
addons = [
    Loopback(),
    Endpoints(metrics.registry),
    HarmonyFilter(),
    metrics,
    Report(),
    Redact(),
]
