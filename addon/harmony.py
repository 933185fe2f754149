"""Entry point for `mitmdump -s addon/harmony.py`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harmony_filter.addon import HarmonyFilter  # noqa: E402

addons = [HarmonyFilter()]
