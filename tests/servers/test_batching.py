import concurrent.futures
import os
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest

from modelpack.errors import ServiceUnavailableError
from modelpack.servers.http._batching import BatchingPredictor
from tests.servers import _models
from tests.servers.conftest import serve


class Recorder:
    def __init__(self, delay=0.0):
        self.sizes = []
        self.delay = delay

    def predict(self, data, params=None):
        self.sizes.append(len(data))
        time.sleep(self.delay)
        return data * 2


def test_concurrent_calls_are_merged_and_split_back_in_order():
    inner = Recorder(delay=0.02)
    batcher = BatchingPredictor(inner, max_batch_size=32, max_latency_ms=20)
    inputs = [np.full((1 + i % 3, 2), i, dtype=float) for i in range(40)]
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        results = list(pool.map(batcher.predict, inputs))
    batcher.close()
    for given, got in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(got, given * 2)
    assert max(inner.sizes) > 3 and max(inner.sizes) <= 32
    assert sum(inner.sizes) == sum(len(i) for i in inputs)


def test_a_request_bigger_than_the_batch_goes_alone_and_whole():
    inner = Recorder()
    batcher = BatchingPredictor(inner, max_batch_size=4, max_latency_ms=1)
    big = np.arange(20.0).reshape(10, 2)
    np.testing.assert_array_equal(batcher.predict(big), big * 2)
    assert inner.sizes == [10]
    batcher.close()


def test_a_full_queue_refuses_with_retry_after():
    gate = threading.Event()

    class Blocked:
        def predict(self, data, params=None):
            gate.wait(10)
            return data

    batcher = BatchingPredictor(Blocked(), max_batch_size=2, max_latency_ms=0, max_queue_size=2)
    futures = [batcher.submit(np.zeros((2, 1)))]
    time.sleep(0.1)  # the worker holds the first batch
    futures += [batcher.submit(np.zeros((2, 1))) for _ in range(2)]
    with pytest.raises(ServiceUnavailableError, match="queue is full") as info:
        batcher.submit(np.zeros((2, 1)))
    assert info.value.retry_after >= 1 and info.value.http_status == 503
    gate.set()
    assert all(f.result(10).shape == (2, 1) for f in futures)
    batcher.close()


def test_one_bad_request_does_not_fail_its_batch_neighbours():
    class Picky:
        def predict(self, data, params=None):
            if (data < 0).any():
                raise ValueError("negative")
            return data

    batcher = BatchingPredictor(Picky(), max_batch_size=64, max_latency_ms=30)
    inputs = [np.array([[float(i)]]) for i in range(8)] + [np.array([[-1.0]])]
    with concurrent.futures.ThreadPoolExecutor(9) as pool:
        futures = [pool.submit(batcher.predict, x) for x in inputs]
    assert [f.result()[0, 0] for f in futures[:8]] == list(range(8))
    with pytest.raises(ValueError, match="negative"):
        futures[8].result()
    batcher.close()


def test_concurrent_http_requests_get_exactly_their_own_rows(echo_path):
    _models.RowEcho.calls.clear()
    with serve(echo_path, max_batch_size=64, max_latency_ms=20) as url:
        _models.RowEcho.calls.clear()

        def call(i):
            ids = [i * 100 + k for k in range(1 + i % 4)]
            body = {"dataframe_records": [{"id": n, "x": 1.0} for n in ids]}
            response = httpx.post(url + "/invocations", json=body, timeout=30)
            return ids, response

        with concurrent.futures.ThreadPoolExecutor(48) as pool:
            results = list(pool.map(call, range(96)))
        for ids, response in results:
            assert response.status_code == 200, response.text
            assert response.json() == {"predictions": [n * 10 for n in ids]}
        assert max(_models.RowEcho.calls) > 4  # requests really were merged
        big = {"dataframe_records": [{"id": n, "x": 1.0} for n in range(100)]}
        response = httpx.post(url + "/invocations", json=big, timeout=30)
        assert response.json() == {"predictions": [n * 10 for n in range(100)]}
        assert 100 in _models.RowEcho.calls
        bad = httpx.post(url + "/invocations", json={"dataframe_records": [{"id": 1, "x": -1.0}]})
        assert bad.status_code == 500 and bad.json()["error"]["code"] == "prediction_failed"
        metrics = httpx.get(url + "/metrics").text
        assert "modelpack_batch_size_count" in metrics
        assert 'modelpack_predict_requests_total{place="batcher"} 98.0' in metrics


def test_http_queue_full_is_503_with_retry_after(slow_path):
    with serve(slow_path, max_batch_size=1_000, max_latency_ms=0, max_queue_size=1) as url:
        body = {"dataframe_records": [{"x": 1.0}]}
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            responses = list(
                pool.map(
                    lambda _: httpx.post(url + "/invocations", json=body, timeout=30), range(6)
                )
            )
        statuses = sorted(r.status_code for r in responses)
        assert 200 in statuses and 503 in statuses, statuses
        refused = next(r for r in responses if r.status_code == 503)
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "overloaded"
        assert "queue is full" in refused.json()["error"]["message"]


def test_frames_of_different_columns_are_not_merged():
    class Echo:
        def predict(self, data, params=None):
            return data

    batcher = BatchingPredictor(Echo(), max_batch_size=16, max_latency_ms=30)
    a = pd.DataFrame({"a": [1, 2]})
    b = pd.DataFrame({"b": [3.0]})
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        fa, fb = pool.submit(batcher.predict, a), pool.submit(batcher.predict, b)
    pd.testing.assert_frame_equal(fa.result(), a)
    pd.testing.assert_frame_equal(fb.result(), b)
    batcher.close()


def test_inline_policy_ignores_a_preempted_call_and_finds_its_way_back():
    from modelpack.servers.http._served import InlinePolicy

    policy = InlinePolicy(limit_s=0.002)
    assert not policy.inline()  # nothing timed yet: a thread
    for _ in range(7):  # the warm-up and a few requests
        policy.record(0.0001)
    assert policy.inline()
    policy.record(0.03)  # one call the OS preempted: still on the loop
    assert policy.inline()
    slow = 0
    while not policy.threaded:  # the model really got slower: most of the last 8 calls
        policy.record(0.005)
        slow += 1
    assert slow == 4  # with the preempted one, 5 of the last 8
    decisions = [policy.inline() for _ in range(16)]
    assert decisions == [False] * 15 + [True]  # every 16th is timed on the loop again
    policy.record(0.005)  # still slow: the next probe is further off
    assert [policy.inline() for _ in range(32)].index(True) == 31
    for _ in range(5):  # quick again: a few probes 16 calls apart bring it back
        policy.record(0.0001)
        if not policy.threaded:
            break
        assert [policy.inline() for _ in range(16)][-1]
    assert not policy.threaded and policy.inline()


def test_inline_policy_never_puts_a_slow_model_on_the_loop():
    from modelpack.servers.http._served import InlinePolicy

    policy = InlinePolicy()
    policy.record(0.0001)
    policy.record(0.2)  # one 200 ms call: off the loop at once
    assert policy.threaded
    for _ in range(8):
        policy.record(0.2)
    assert not any(policy.inline() for _ in range(5000))


class Gated:
    """Holds its first predict until released, recording the rows of every call."""

    def __init__(self):
        self.sizes = []
        self.started = threading.Event()
        self.release = threading.Event()

    def predict(self, data, params=None):
        self.sizes.append(len(data))
        self.started.set()
        self.release.wait(10)
        return data * 2


def test_requests_queued_while_the_model_is_busy_go_in_one_predict_call():
    inner = Gated()
    batcher = BatchingPredictor(inner, max_batch_size=64, max_latency_ms=20)
    first = batcher.submit(np.zeros((1, 3)))
    assert inner.started.wait(10)  # the worker holds the first request
    inputs = [np.full((1 + i % 2, 3), float(i)) for i in range(12)]
    futures = [batcher.submit(x) for x in inputs]
    inner.release.set()
    for given, future in zip(inputs, futures, strict=True):
        np.testing.assert_array_equal(future.result(10), given * 2)
    assert first.result(10).shape == (1, 3)
    # The twelve waited together: one call for all of them, not one each.
    assert inner.sizes == [1, sum(len(x) for x in inputs)]
    batcher.close()


def test_a_full_batch_goes_at_once_whatever_the_budget():
    inner = Recorder()
    batcher = BatchingPredictor(inner, max_batch_size=4, max_latency_ms=60_000)
    futures = [batcher.submit(np.full((1, 2), float(i))) for i in range(4)]
    assert [f.result(10)[0, 0] for f in futures] == [0.0, 2.0, 4.0, 6.0]
    assert inner.sizes == [4]
    batcher.close()


def test_arrays_of_other_shapes_wait_for_their_own_batch():
    inner = Gated()
    batcher = BatchingPredictor(inner, max_batch_size=64, max_latency_ms=20)
    batcher.submit(np.zeros((1, 3)))
    assert inner.started.wait(10)
    narrow = [batcher.submit(np.ones((1, 3))) for _ in range(3)]
    wide = batcher.submit(np.ones((2, 5)))
    more_narrow = batcher.submit(np.ones((1, 3)))
    inner.release.set()
    assert [f.result(10).shape for f in narrow] == [(1, 3)] * 3
    assert wide.result(10).shape == (2, 5)
    assert more_narrow.result(10).shape == (1, 3)
    # In arrival order: the narrow ones merged up to the wide one, which went alone.
    assert inner.sizes == [1, 3, 2, 1]
    batcher.close()


def test_close_answers_what_is_queued_and_a_later_request_starts_a_new_worker():
    inner = Gated()
    batcher = BatchingPredictor(inner, max_batch_size=8, max_latency_ms=20)
    first = batcher.submit(np.zeros((1, 1)))
    assert inner.started.wait(10)
    queued = [batcher.submit(np.ones((1, 1))) for _ in range(5)]
    closing = threading.Thread(target=batcher.close)
    closing.start()
    inner.release.set()
    closing.join(10)
    assert not closing.is_alive()
    assert first.result(0).shape == (1, 1)
    assert [f.result(0)[0, 0] for f in queued] == [2.0] * 5  # answered before the worker left
    np.testing.assert_array_equal(batcher.predict(np.ones((1, 1))), [[2.0]])
    batcher.close()


def test_requests_with_params_are_never_merged():
    class WithParams:
        calls = []

        def predict(self, data, params=None):
            self.calls.append((len(data), dict(params or {})))
            return data * (params or {}).get("scale", 1)

    inner = WithParams()
    batcher = BatchingPredictor(inner, max_batch_size=64, max_latency_ms=50)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        scaled = [pool.submit(batcher.predict, np.ones((1, 1)), {"scale": i}) for i in range(4)]
        plain = [pool.submit(batcher.predict, np.ones((1, 1))) for _ in range(4)]
    assert [f.result()[0, 0] for f in scaled] == [0.0, 1.0, 2.0, 3.0]
    assert [f.result()[0, 0] for f in plain] == [1.0] * 4
    assert sorted(p["scale"] for _, p in inner.calls if p) == [0, 1, 2, 3]
    assert sum(n for n, p in inner.calls if not p) == 4
    batcher.close()


def test_a_served_torch_model_leaves_a_core_to_the_event_loop():
    # In a fresh interpreter: the cap changes torch's process-wide thread count.
    code = (
        "import os, torch\n"
        "from modelpack.servers.http._served import leave_a_core_to_the_event_loop as cap\n"
        "torch.set_num_threads(3)\n"
        "got = cap()\n"
        "want = max(1, len(os.sched_getaffinity(0)) - 1)\n"
        "print(got, torch.get_num_threads(), want if want < 3 else None)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    got, threads, want = out.stdout.split()
    if want == "None":  # a machine with over 3 cores: 3 threads leave one already
        assert (got, threads) == ("None", "3")
    else:
        assert got == want and threads == want
    user_set = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "OMP_NUM_THREADS": "3"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert user_set.returncode == 0, user_set.stderr
    assert user_set.stdout.split()[:2] == ["None", "3"]  # the user's choice stands


def test_the_tensor_fast_path_decodes_as_the_general_path_does():
    from modelpack.errors import InvalidInputError, SignatureError
    from modelpack.servers.http._codecs import InvocationDecoder
    from modelpack.signature import Schema, Signature, TensorSpec

    signature = Signature(inputs=Schema(tensors=(TensorSpec("float32", (-1, 3)),)))
    decoder = InvocationDecoder(signature)
    for rows in ([[1, 2, 3]], [[0.5, 1.5, 2.5], [3.0, 4.0, 5.0]]):
        fast, params = decoder.decode_json({"inputs": rows})
        general, _ = decoder.decode_json({"inputs": rows, "params": {}})  # not the fast path
        assert params == {} and fast.dtype == general.dtype == np.float32
        np.testing.assert_array_equal(fast, general)
    for bad, error in (
        ([[1.0, 2.0]], SignatureError),  # two columns for three
        ([["1", "2", "3"]], SignatureError),  # text, not numbers
        ([[1.0, 2.0, 3.0], [1.0]], InvalidInputError),  # ragged
        ([], SignatureError),  # no rows
    ):
        with pytest.raises(error) as fast_error:
            decoder.decode_json({"inputs": bad})
        with pytest.raises(error) as general_error:
            decoder.decode_json({"inputs": bad, "params": {}})
        assert str(fast_error.value) == str(general_error.value)
