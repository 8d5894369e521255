"""Decision 0011's measurement: does the arrival interleaving change the node's alerts?

The determinism test's recorded farm stream (tests/integration/test_determinism.py) is fed to
``EdgeNode.handle()`` directly (no MQTT, no load), plainly and perturbed with three seeds; it
prints how many alerts differ::

    .venv/bin/python docs/decisions/0011_measure_arrival_order.py [SOURCE_TREE]

SOURCE_TREE (default: this checkout) is the tree whose ``pipeline`` is imported, e.g. a
``git archive`` of an older commit unpacked somewhere. For a node that still has it, the
wall-clock dropout check (``check_silence``) is called every 997 readings, as its timer would.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[2]
ROOT = sys.argv[1] if len(sys.argv) > 1 else str(HERE)
sys.path.insert(0, ROOT)


def _test_module() -> Any:
    spec = importlib.util.spec_from_file_location("determinism", HERE / "tests/integration/test_determinism.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["determinism"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    import pipeline
    from pipeline.clock import OffsetClock
    from pipeline.config import load_settings
    from pipeline.edge.node import EdgeNode
    from simulators import SimOptions, run

    assert pipeline.__file__ is not None and pipeline.__file__.startswith(ROOT), pipeline.__file__
    dt = _test_module()
    recorder = dt.Recorder()
    options = SimOptions(
        sites=(dt.SITE,),
        devices_per_site=dt.DEVICES,
        rate=1 / 60,
        duration=dt.HOURS * 3600,
        seed=dt.SEED,
        qos=1,
        start_ms=dt.START_MS,
        anomaly_rate=0.2,
        anomaly_rates={"irrigation_leak": 0.3},
    )
    run(options, recorder)
    stream = recorder.readings

    def alerts_of(readings: list[Any]) -> set[tuple[str, str, str, str, int]]:
        overrides = {
            "edge.site": dt.SITE,
            "edge.state_dir": tempfile.mkdtemp(),
            "mqtt.url": "mqtt://127.0.0.1:1",
            "aggregate.lateness_s": dt.LATENESS_S,
        }
        end_ms = max(r.ts for r in readings)
        node = EdgeNode(load_settings(overrides=overrides), clock=OffsetClock(end_ms + 60_000 - time.time_ns() // 1_000_000))
        got: list[Any] = []
        node.raise_alert = got.append  # type: ignore[method-assign]
        for i, r in enumerate(readings):
            node.handle(r.topic, r.payload)
            if i % 997 == 0 and hasattr(node, "check_silence"):
                node.check_silence()
        if hasattr(node, "release_held"):
            node.release_held(everything=True)
        node.queue.close()
        return {(a.data.alert_id, a.data.state, a.data.severity, a.data.metric, a.data.reading_ts) for a in got}

    plain = alerts_of(stream)
    for seed in (19, 20, 21):
        rough = alerts_of(dt.perturbed(stream, seed))
        by_metric: dict[str, int] = {}
        for key in plain ^ rough:
            by_metric[key[3]] = by_metric.get(key[3], 0) + 1
        print(f"seed {seed}: plain {len(plain)}, perturbed {len(rough)}, differing {len(plain ^ rough)} {by_metric}")


if __name__ == "__main__":
    main()
