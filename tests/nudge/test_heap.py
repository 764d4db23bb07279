"""Freezing the start-up heap out of the cyclic GC."""


def test_the_startup_heap_is_frozen_out_of_the_collector_and_later_garbage_still_collected():
    import gc
    import weakref

    from nudge.heap import YOUNG_GENERATION_THRESHOLD, freeze_startup_heap

    before = gc.get_threshold()
    gc.set_threshold(700, *before[1:])  # CPython's default, whatever an earlier test left
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == YOUNG_GENERATION_THRESHOLD

        class Node:
            pass

        later = Node()
        later.self = later  # a cycle made after the freeze
        gone = weakref.ref(later)
        del later
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
