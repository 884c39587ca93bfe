"""The service's process set-up that needs no kernel (the service itself runs in the
end-to-end and CLI tests)."""

import gc

from fastban import service


def test_tune_gc_freezes_what_exists_and_makes_collections_rarer():
    before = gc.get_threshold()
    try:
        survivor = [object() for _ in range(100)]          # noqa: F841 (kept alive on purpose)
        service.tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == service.GC_THRESHOLDS
        assert service.GC_THRESHOLDS[0] > before[0]
        # cycles made afterwards are still collected
        cycle = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
