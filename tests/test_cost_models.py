"""Cost models on cases computed by hand (each expected value is derived in the comment above it)."""
import json

import numpy as np
import pandas as pd
import pytest

from memsim.cost import kernels, price_ops, storage_read_seconds
from memsim.cost.model import packed_operand_bytes
from memsim.hardware import load_system
from memsim.hardware.load import validate_system
from memsim.hardware.schema import Calibration
from memsim.trace.ops import categorize
from memsim.validate.readers import op_row


def one(*values):
    return [np.array([float(v)]) for v in values]


def test_gemm_single_wave_pays_compute_plus_memory_and_more_waves_hide_it():
    # 2 units of 1 TFLOP/s each; 256x256x1024; 1 MB at 10 GB/s = 100 us of memory.
    # 64x64 tiles: 16 tiles -> 8 waves of 2*64*64*1024/1e12 = 8.389 us -> compute 67.11 us;
    # exposed share 1/8: 100 + 67.11/8 = 108.389 us, the best of all tiles (one 256x128 wave:
    # 100 + 67.11 = 167.1 us; 128x128, 2 waves: 100 + 33.55 us).
    compute, memory, total = kernels.gemm_times(*one(1, 256, 256, 1024, 1e6, 2e12, 2, 1e10, 0.0, 0.0, 1.0, 1.0, 2.0, 0.0))
    assert compute[0] == pytest.approx(8 * 2 * 64 * 64 * 1024 / 1e12)
    assert memory[0] == pytest.approx(100e-6)
    assert total[0] == pytest.approx(100e-6 + 8 * 2 * 64 * 64 * 1024 / 1e12 / 8)


def test_gemm_first_wave_exposes_a_calibrated_share_of_the_shorter_side():
    # one unit of 1 TFLOP/s, 64 x 64 x 1024: one 64x64 tile, 2*64*64*1024/1e12 = 8.389 us of
    # compute in one wave against 10 us of memory. A pipeline that exposes a quarter of the
    # wave's compute: 10 + 0.25 x 8.389 us; the overlap loss is the floor (0.5: 10 + 4.194 us).
    wave = 2 * 64 * 64 * 1024 / 1e12
    _, _, total = kernels.gemm_times(*one(1, 64, 64, 1024, 1e5, 1e12, 1, 1e10, 0.0, 0.0, 0.25, 1.0, 2.0, 0.0))
    assert total[0] == pytest.approx(10e-6 + 0.25 * wave)
    _, _, total = kernels.gemm_times(*one(1, 64, 64, 1024, 1e5, 1e12, 1, 1e10, 0.0, 0.5, 0.25, 1.0, 2.0, 0.0))
    assert total[0] == pytest.approx(10e-6 + 0.5 * wave)


def test_gemm_wave_quantisation():
    # 4 units of 1 TFLOP/s, 64 x 320 x 256, no memory time: 64x64 tiles make 5 tiles = 2 waves;
    # 64x128 tiles make 3 tiles = 1 wave of 2*64*128*256/1e12 = 4.194 us, the best; the ideal
    # would be 2*64*320*256/4e12 = 2.62 us.
    _, _, total = kernels.gemm_times(*one(1, 64, 320, 256, 0.0, 4e12, 4, 1.0, 0.0, 0.0, 1.0, 1.0, 2.0, 0.0))
    assert total[0] == pytest.approx(2 * 64 * 128 * 256 / 1e12)


def test_gemm_charges_a_calibrated_share_of_a_partial_last_wave():
    # The case above. q = 0 charges the 64x64 tiles' 5 tiles as 5/4 waves of 2*64*64*256/1e12 =
    # 2.097 us: 2.62 us, the ideal. q = 0.5 charges 0.5 x 2 + 0.5 x 1.25 = 1.625 waves: 3.408 us,
    # still below the 64x128 tiles' one whole wave (4.194 us; fewer tiles than units is one wave).
    tile = 2 * 64 * 64 * 256 / 1e12
    _, _, total = kernels.gemm_times(*one(1, 64, 320, 256, 0.0, 4e12, 4, 1.0, 0.0, 0.0, 1.0, 0.0, 2.0, 0.0))
    assert total[0] == pytest.approx(1.25 * tile)
    _, _, total = kernels.gemm_times(*one(1, 64, 320, 256, 0.0, 4e12, 4, 1.0, 0.0, 0.0, 1.0, 0.5, 2.0, 0.0))
    assert total[0] == pytest.approx(1.625 * tile)


def test_gemm_small_tiles_wait_for_their_operands_from_the_cache():
    # 4 units of 1 TFLOP/s behind a 4 GB/s cache (1 GB/s each), 2-byte elements, 64 x 320 x 256,
    # no memory time, no exposed share. A step of K of a 64x128 tile computes 2*64*128 FLOPs in
    # 16.4 ns but loads (64 + 128) x 2 B, 384 ns at 1 GB/s: its one wave takes 256 x 384 ns =
    # 98.3 us, the best. 64x64 tiles: 2 waves of 256 x (64 + 64) x 2 B / 1 GB/s = 131 us; a
    # 128x256 tile holds 64 rows here: one wave of 256 x (64 + 256) x 2 B / 1 GB/s = 164 us.
    _, _, total = kernels.gemm_times(*one(1, 64, 320, 256, 0.0, 4e12, 4, 1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 4e9))
    assert total[0] == pytest.approx(256 * (64 + 128) * 2 / 1e9)
    # the cache's stream runs alongside the memory's: 200 us of memory leaves no room for it
    _, _, total = kernels.gemm_times(*one(1, 64, 320, 256, 2e5, 4e12, 4, 1e9, 0.0, 0.0, 0.0, 1.0, 2.0, 4e9))
    assert total[0] == pytest.approx(200e-6)
    # a cache fast enough leaves the arithmetic bound of test_gemm_wave_quantisation
    _, _, total = kernels.gemm_times(*one(1, 64, 320, 256, 0.0, 4e12, 4, 1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 4e15))
    assert total[0] == pytest.approx(2 * 64 * 128 * 256 / 1e12)


def test_gemm_splits_k_when_tiles_cannot_fill_the_units():
    # 8 units of 1 TFLOP/s, 64 x 64 x 2048: one 64x64 tile; split-K over min(8, 2048/256 = 8)
    # units, each doing K = 256: 2*64*64*256/1e12 = 2.097 us in one wave.
    _, _, total = kernels.gemm_times(*one(1, 64, 64, 2048, 0.0, 8e12, 8, 1.0, 0.0, 0.0, 1.0, 1.0, 2.0, 0.0))
    assert total[0] == pytest.approx(2 * 64 * 64 * 256 / 1e12)


def test_flash_attention_io_reads_kv_once_per_query_block():
    # 2 problems, q = kv = 256, d = dv = 64, 2-byte values, 64 KiB SRAM:
    # Br = floor(65536 / (4*64*2)) = 128 -> 2 passes over K and V.
    # Q+O = 2*2*256*128 = 131072 B; K+V = 131072 B per pass -> 131072 + 2*131072 = 393216 B.
    (prefill,) = kernels.flash_attention_bytes(*one(2, 256, 256, 64, 64, 1.0, 2, 65536))
    assert prefill == 393216
    # decode: one query row, one pass: Q+O = 2*2*1*128 = 512 B, K+V = 131072 B.
    (decode,) = kernels.flash_attention_bytes(*one(2, 1, 256, 64, 64, 1.0, 2, 65536))
    assert decode == 512 + 131072
    # grouped-query attention with a quarter of the KV heads reads a quarter of K and V
    (gqa,) = kernels.flash_attention_bytes(*one(2, 1, 256, 64, 64, 0.25, 2, 65536))
    assert gqa == 512 + 131072 / 4


def test_flash_attention_rereads_of_kv_hit_the_cache_while_the_heads_in_flight_fit():
    # the case above on 4 units: 2 blocks per head, so ceil(4/2) = 2 heads in flight, each with
    # 256*128*2 = 65536 B of K and V: 131072 B fit a 200 kB cache, and the second pass over K
    # and V (2 heads x 65536 B) comes from it; a 100 kB cache holds too little
    shape = one(2, 256, 256, 64, 64, 1.0, 2, 65536, 4)
    assert kernels.flash_attention_cached_rereads(*shape, np.array([2e5]))[0] == 131072
    assert kernels.flash_attention_cached_rereads(*shape, np.array([1e5]))[0] == 0


def test_block_waves_pay_a_partial_last_wave_at_its_blocks_rate():
    # 600 B over 6 blocks of 100 B, 4 at a time, memory 100 B/s, 10 B/s a block: a whole wave
    # of 4 streams at min(100, 40) B/s (10 s), the last 2 blocks at min(100, 20) B/s (10 s)
    assert kernels.block_wave_seconds(600.0, 6.0, 4.0, 100.0, 10.0) == pytest.approx(20.0)
    # blocks fast enough leave the memory's rate, 6 s; no per-block rate, likewise
    assert kernels.block_wave_seconds(600.0, 6.0, 4.0, 100.0, 1000.0) == pytest.approx(6.0)
    assert kernels.block_wave_seconds(600.0, 6.0, 4.0, 100.0, 0.0) == pytest.approx(6.0)


def test_kv_cache_decode_runs_the_query_heads_of_a_kv_head_as_one_block():
    # one sequence of 32 query heads over 4 KV heads, 128 keys of head dim 128 (one key block,
    # so no split), on 4 units (8 block slots), memory at 1 TB/s, 1 GB/s a block. Packed, the
    # decode runs 4 blocks, one partial wave: bytes / 4 GB/s. One block per query head would be
    # 32 blocks, 4 whole waves of 8: bytes / 8 GB/s.
    nbytes = 2 * 4 * 128 * 128 * 2.0

    def memory(kv_head_ratio):
        args = one(32, 1, 128, 128, 128) + [np.array([False]), np.array([2 * 32 * 128 * 256.0]), np.array([nbytes]),
                                            np.array([4e12]), np.array([4.0])]
        args += one(1e12, 0.0, 0.0) + [np.array([True])] + one(kv_head_ratio, 1e9)
        return kernels.attention_times(*args)[1][0]

    assert memory(4 / 32) == pytest.approx(nbytes / 4e9)
    assert memory(1.0) == pytest.approx(nbytes / 8e9)


def test_attention_blocks_are_scheduled_over_the_units():
    def seconds(problems, q, kv, causal, units, flops=None):
        if flops is None:  # the matmuls of the blocks below
            blocks = [(min(128, q - j), min(kv, kv - q + min(j + 128, q)) if causal else kv) for j in range(0, q, 128)]
            flops = problems * sum(2 * rows * visible * 128 for rows, visible in blocks)
        args = one(problems, q, kv, 64, 64) + [np.array([causal]), np.array([float(flops)]), np.zeros(1),
                                                np.array([units * 1e12]), np.array([float(units)])]
        args += one(1.0, 0.0, 0.0) + [np.array([False])]  # bandwidth, overhead, overlap; the forward kernel
        args += one(1.0, 0.0)  # K/V heads per query head, per-block rate (the KV-cache kernel's)
        return kernels.attention_times(*args)[0][0]

    # 4 heads, 256 causal queries: blocks of 128 rows see 128 and 256 keys, w = 2*128*{128,256}*128
    # = 4.19 and 8.39 MFLOP, and each pays a setup of one 128-key step, c = 4.19 MFLOP;
    # 8 blocks on 4 units of 1 TFLOP/s: mean load 4*(12.58 + 8.39)/4 MFLOP = 20.97 us
    setup = 4194304
    assert seconds(4, 256, 256, True, 4) == pytest.approx(4 * (4194304 + 8388608 + 2 * setup) / 4 / 1e12)
    # 1 head: 2 blocks on 8 units, each block's keys split over floor(8/2) = 4 units; the longest
    # block (8.39 + 4.19 MFLOP, over 4 units) bounds it, not the mean load (20.97/8 MFLOP)
    assert seconds(1, 256, 256, True, 8) == pytest.approx((8388608 + setup) / 4 / 1e12)
    # decode: one query row over 4096 keys (+128 of setup), split over all 4 units
    assert seconds(1, 1, 4096, False, 4) == pytest.approx(2 * (4096 + 128) * 128 / 4 / 1e12)
    # a backward pass (2.5x the forward's FLOPs) spreads over the same blocks
    forward = 4 * (4194304 + 8388608)
    assert seconds(4, 256, 256, True, 4, 2.5 * forward) == pytest.approx((2.5 * forward + 4 * 2 * setup) / 4 / 1e12)


def test_atens_cpu_flash_attention_streams_each_query_heads_keys_task_by_task():
    # a decode of 2 sequences x 8 query heads over 4 KV heads, 256 keys of head dim 32, fp32: 16
    # tasks (one query slice each), each streaming 256 x 64 x 4 B of K/V, plus Q and O once; on 4
    # cores at 1 GB/s a task (memory at 1 TB/s): four waves at 4 GB/s
    def flash(problems, q, causal, cores):
        return kernels.aten_cpu_flash_traffic(*one(problems, q, 256, 32, 32), np.array([causal]), np.array([4.0]),
                                              *one(cores, 1e12, 1e9))

    traffic, seconds = flash(16, 1, False, 4)
    assert traffic[0] == pytest.approx(16 * (256 + 1) * 64 * 4.0) and seconds[0] == pytest.approx(traffic[0] / 4e9)
    # a causal prefill of 256 queries: 4 slices of 64 rows (from 192 queries on) see 64..256 keys,
    # 4 tasks: one wave of 4 on 8 cores, at 4 GB/s
    traffic, seconds = flash(1, 256, True, 8)
    assert traffic[0] == pytest.approx((64 + 128 + 192 + 256 + 256) * 64 * 4.0)
    assert seconds[0] == pytest.approx(traffic[0] / 4e9)
    raw = json.loads(json.dumps(SYSTEM))
    raw["devices"]["gpu"]["compute"]["sm"]["kind"] = "core"
    raw["devices"]["gpu"]["calibration"] = {"source": "test", "block_bandwidth": {"attention": "1 GB/s"}}
    attrs = {"heads": 8, "kv_heads": 4}
    decode = pd.DataFrame([op("attention", 2 * 16 * 256 * 64, 0, 0, (16, 1, 256, 32), attrs=attrs)])
    costs = price_ops(decode, validate_system(raw).device)
    # 16 tasks on 4 cores at 1 GB/s each: four waves of the streamed (bf16) bytes at 4 GB/s, each
    # query head streaming its KV head's keys on its own
    assert costs["memory_s"][0] == pytest.approx(16 * 257 * 64 * 2.0 / 4e9)
    raw["devices"]["gpu"]["compute"]["sm"]["kind"] = "sm"  # a GPU's forward kernel shares them in its L2
    assert price_ops(decode, validate_system(raw).device)["memory_s"][0] < costs["memory_s"][0] / 2


def test_kv_cache_attention_copies_the_new_keys_each_query_block_sees():
    # 200 new tokens, no cache, head dim 128 (key blocks of 128): query blocks of 64 rows end at
    # keys 64, 128, 192, 200 and copy up to the end of their key block, capped at 200:
    # 128 + 128 + 200 + 200 = 656 rows of K and V (2 x 128 x 2 B), each read and written
    shape = one(1, 200, 200, 128, 128, 2)
    assert kernels.appended_kv_copy_bytes(*shape)[0] == 656 * 512 * 2
    # head dim 64 (key blocks of 256): every block copies all 200 rows; 3 heads copy 3 times
    assert kernels.appended_kv_copy_bytes(*one(3, 200, 200, 64, 64, 2))[0] == 3 * 4 * 200 * 256 * 2
    # decode after 1000 cached keys: the one new row
    assert kernels.appended_kv_copy_bytes(*one(1, 1, 1001, 128, 128, 2))[0] == 512 * 2


def test_kv_cache_kernel_splits_keys_by_flash_attentions_wave_heuristic():
    # 64 blocks on 108 SMs (216 slots), 3100 keys in 25 blocks of 128: splits changing the key
    # blocks per split are 1, 2, 3, 4, 5, 7, 9, 13, 25; waves 64s/216 reach their best
    # efficiency 3.85/4 = 0.963 at s = 13, and the smallest within 85% of it is s = 3 (0.889)
    assert kernels.kv_cache_splits(64.0, 108.0, 3100.0, 128.0) == 3.0
    assert kernels.kv_cache_splits(180.0, 108.0, 3100.0, 128.0) == 1.0  # fills 80% of the slots
    assert kernels.kv_cache_splits(64.0, 108.0, 100.0, 128.0) == 1.0  # one key block: nothing to split


def test_a_kernel_lasts_at_least_as_long_as_one_block_takes_over_its_share():
    # 8 blocks share 8e4 B: 1e4 B each at 10 GB/s = 1 us, whatever the units
    assert kernels.block_row_seconds(*one(8e4, 8, 10e9))[0] == pytest.approx(1e-6)
    # twice the blocks over twice the bytes: the same rows, the same bound
    assert kernels.block_row_seconds(*one(1.6e5, 16, 10e9))[0] == pytest.approx(1e-6)
    # no blocks or no rate: no bound
    assert kernels.block_row_seconds(*one(8e4, 0, 10e9))[0] == 0.0
    assert kernels.block_row_seconds(*one(8e4, 8, 0.0))[0] == 0.0


def test_unfused_attention_writes_and_reads_the_score_matrix():
    # operands 2*2*(256*64 + 256*128 + 256*64) = 262144 B; scores 4*2*2*256*256 = 1048576 B
    (total,) = kernels.unfused_attention_bytes(*one(2, 256, 256, 64, 64, 1.0, 2))
    assert total == 262144 + 1048576


def test_scan_state_spills_when_it_does_not_fit_on_chip():
    # 1 MB state, 10 steps, 0.5 MB on chip: 2*1e6*10 = 2e7 extra bytes at 1e9 B/s = 20 ms.
    _, memory, _ = kernels.scan_times(*one(10, 1e6, 1e6, 0, 1e12, 1e9, 5e5, 0))
    assert memory[0] == pytest.approx((1e6 + 2e7) / 1e9)
    _, on_chip, _ = kernels.scan_times(*one(10, 1e6, 1e6, 0, 1e12, 1e9, 2e6, 0))
    assert on_chip[0] == pytest.approx(1e6 / 1e9)


def test_storage_reads_of_larger_chunks_are_faster():
    # 1 MiB at 1 GB/s, 100 us latency, queue depth 32. 4 KiB requests: 256 -> 8 rounds ->
    # 800 us + 1048.576 us; 64 KiB requests: 16 -> 1 round -> 100 us + 1048.576 us.
    size = np.array([1048576.0, 1048576.0])
    seconds = kernels.transfer_times(size, np.full(2, 1e9), np.full(2, 100e-6), np.array([4096.0, 65536.0]),
                                     np.full(2, 32.0))
    assert seconds == pytest.approx([800e-6 + 1048.576e-6, 100e-6 + 1048.576e-6])


def test_storage_read_of_an_nvme_tier():
    # the H100 config's NVMe: 7 GB/s, 90 us, 4 KiB granularity, queue depth 64, efficiency 1.
    # 64 MiB in 1 MiB requests: 64 requests -> 1 round: 90 us + 67108864 / 7e9 s
    nvme = load_system("nvidia-h100-sxm").devices["host"].memories["nvme"]
    (seconds,) = storage_read_seconds(64 * 2**20, nvme, 2**20)
    assert seconds == pytest.approx(90e-6 + 67108864 / 7e9)
    # 4 KiB requests (the granularity): 16384 requests -> 256 rounds of 90 us
    (small,) = storage_read_seconds(64 * 2**20, nvme)
    assert small == pytest.approx(256 * 90e-6 + 67108864 / 7e9)


def test_ring_and_tree_all_reduce():
    # 4 ranks, 1 MB, 100 GB/s, 5 us. Ring: 2*3*(5 us + 1e6/(4*1e11)) = 45 us.
    # Tree: 2*(ceil(log2 4)*5 us + 1e6/1e11) = 2*(10 us + 10 us) = 40 us.
    seconds = kernels.collective_times(np.full(2, 1e6), np.full(2, 4.0), np.full(2, 1e11), np.full(2, 5e-6),
                                       np.array([0, 1]), np.full(2, 2.0))
    assert seconds == pytest.approx([45e-6, 40e-6])
    # In the switch: 2*ceil(log2 4)*5 us + 1e6/1e11 = 20 us + 10 us; each rank sends its 1 MB
    # once, where a ring sends 2*3/4 of it
    (switch,) = kernels.collective_times(*one(1e6, 4.0, 1e11, 5e-6), np.array([kernels.IN_NETWORK]), np.full(1, 2.0))
    assert switch == pytest.approx(30e-6)
    wire = kernels.collective_wire_bytes(np.full(3, 1e6), np.full(3, 4.0),
                                         np.array([kernels.RING, kernels.TREE, kernels.IN_NETWORK]), np.full(3, 2.0))
    assert wire == pytest.approx([1.5e6, 2e6, 1e6])
    # one rank sends its 1 MB to another: 5 us + 1e6/1e11 = 15 us, whatever the bytes factor
    (send,) = kernels.collective_times(*one(1e6, 2.0, 1e11, 5e-6), np.array([kernels.POINT_TO_POINT]), np.full(1, 2.0))
    assert send == pytest.approx(15e-6)


SYSTEM = {"name": "toy", "devices": {
    "gpu": {"kind": "gpu", "memories": {"hbm": {"kind": "hbm", "capacity": "1 GiB", "bandwidth": "1 TB/s"}},
            "compute": {"sm": {"kind": "sm", "count": 4, "matrix_flops": {"bf16": "4 TFLOP/s"},
                               "vector_flops": {"bf16": "1 TFLOP/s"}, "op_overhead": "2 us",
                               "sram_per_unit": "64 KiB"}}},
    "host": {"kind": "cpu", "memories": {"ddr": {"kind": "ddr", "capacity": "1 GiB", "bandwidth": "100 GB/s"}}}},
    "links": {"pcie": {"kind": "pcie", "between": ["host.ddr", "gpu.hbm"], "bandwidth": "10 GB/s",
                       "latency": "1 us"}}}


def op(category, flops=0.0, read=0.0, written=0.0, dims=(0, 0, 0, 0), attrs=None):
    batch, m, n, k = dims
    return {"name": category, "category": category, "dtype": "bf16", "flops": flops, "bytes_read": read,
            "bytes_written": written, "batch": batch, "m": m, "n": n, "k": k,
            "attrs": json.dumps(attrs) if attrs else "", "shapes": ""}


def test_price_ops_dispatches_each_category_to_its_model():
    system = validate_system(SYSTEM)
    ops = pd.DataFrame([
        op("elementwise", 1e3, 1e6, 1e6),
        op("memcpy", 0, 1e6, 1e6, attrs={"direction": "HtoD", "pinned": True}),
        op("memcpy", 0, 1e6, 1e6, attrs={"direction": "HtoD", "pinned": False}),
        op("gemm", 2 * 64 * 320 * 256, 0, 0, (1, 64, 320, 256)),
    ])
    costs = price_ops(ops, system.device, links=system.links.values())
    # elementwise: 2e6 B at 1 TB/s = 2 us, plus 2 us overhead
    assert costs["duration_s"][0] == pytest.approx(4e-6)
    # pinned HtoD: 1e6 B cross the 10 GB/s link once: 100 us + 1 us latency + 2 us overhead;
    # pageable at half the rate: 200 us + 1 us + 2 us
    assert costs["duration_s"][1] == pytest.approx(103e-6)
    assert costs["duration_s"][2] == pytest.approx(203e-6)
    # the wave-quantised case above on this 4-unit, 4 TFLOP/s device: 4.194 us + 2 us
    assert costs["duration_s"][3] == pytest.approx(2 * 64 * 128 * 256 / 1e12 + 2e-6)
    assert (costs["duration_s"] >= np.maximum(costs["compute_s"], costs["memory_s"])).all()


def test_a_chunked_scan_runs_on_the_matrix_units_and_a_stepped_scan_on_the_vector_units():
    system = validate_system(SYSTEM)
    state = {"steps": 8, "state_bytes": 1024}  # fits in the 4 x 64 KiB on chip: no state traffic
    ops = pd.DataFrame([op("scan", 4e6, 1e3, 1e3, attrs=state), op("chunked_scan", 4e6, 1e3, 1e3, attrs=state)])
    costs = price_ops(ops, system.device)
    # 4 MFLOP at the 1 TFLOP/s vector peak (4 us) and at the 4 TFLOP/s matrix peak (1 us), + 2 us
    assert costs["duration_s"].to_numpy() == pytest.approx([6e-6, 3e-6])


def test_calibration_overrides_the_datasheet():
    raw = json.loads(json.dumps(SYSTEM))
    raw["devices"]["gpu"]["calibration"] = {"source": "test", "bandwidth_efficiency": {"elementwise": 0.5},
                                           "category_overhead": {"elementwise": "5 us"}}
    costs = price_ops(pd.DataFrame([op("elementwise", 0, 1e6, 1e6), op("strided", 0, 1e6, 1e6)]),
                      validate_system(raw).device)
    # 2e6 B at 0.5 TB/s = 4 us, plus the calibrated 5 us; a strided op, not calibrated here,
    # takes the elementwise constants
    assert list(costs["duration_s"]) == pytest.approx([9e-6, 9e-6])
    raw["devices"]["gpu"]["calibration"]["bandwidth_efficiency"]["strided"] = 0.25
    costs = price_ops(pd.DataFrame([op("strided", 0, 1e6, 1e6)]), validate_system(raw).device)
    # 2e6 B at 0.25 TB/s = 8 us, plus the elementwise 5 us
    assert costs["duration_s"][0] == pytest.approx(13e-6)


# a convolution (a library call that sets up per call) and a factory op (an allocation and a fill,
# dispatched apart) pay their own fixed cost where calibrated, else that of the category they vary
@pytest.mark.parametrize("category, fallback", [("conv", "gemm"), ("factory", "elementwise")])
def test_a_category_pays_its_own_fixed_cost_where_calibrated_else_the_one_it_varies(category, fallback):
    raw = json.loads(json.dumps(SYSTEM))
    raw["devices"]["gpu"]["calibration"] = {"source": "test", "category_overhead": {fallback: "5 us"}}
    one = pd.DataFrame([op(category, 0, 0, 0)])
    assert price_ops(one, validate_system(raw).device)["duration_s"][0] == pytest.approx(5e-6)
    raw["devices"]["gpu"]["calibration"]["category_overhead"][category] = "50 us"
    assert price_ops(one, validate_system(raw).device)["duration_s"][0] == pytest.approx(50e-6)


def test_convolutions_and_factory_ops_are_categories_of_their_own():
    assert categorize("aten::convolution") == "conv" and categorize("aten::mm") == "gemm"
    assert categorize("aten::ones") == categorize("aten::arange") == "factory"
    assert categorize("aten::fill_") == "elementwise"  # an in-place fill allocates nothing


def test_each_python_number_an_op_wraps_costs_the_calibrated_host_time():
    raw = json.loads(json.dumps(SYSTEM))
    raw["devices"]["gpu"]["calibration"] = {"source": "test", "category_overhead": {"elementwise": "3 us"},
                                           "wrapped_scalar_cost": "2 us"}
    ops = pd.DataFrame([op("elementwise"), op("elementwise", attrs={"wrapped_scalars": 1}),
                        op("elementwise", attrs={"wrapped_scalars": 2})])
    assert list(price_ops(ops, validate_system(raw).device)["duration_s"]) == pytest.approx([3e-6, 5e-6, 7e-6])
    del raw["devices"]["gpu"]["calibration"]["wrapped_scalar_cost"]  # uncalibrated: a GPU kernel's time
    assert list(price_ops(ops, validate_system(raw).device)["duration_s"]) == pytest.approx([3e-6] * 3)


def test_a_reread_of_the_previous_ops_output_comes_from_the_cache_while_the_working_set_fits():
    raw = json.loads(json.dumps(SYSTEM))
    raw["devices"]["gpu"]["memories"]["l2"] = {"kind": "sram", "capacity": "4 MB", "bandwidth": "4 TB/s"}
    raw["devices"]["gpu"]["default_memory"] = "hbm"
    device = validate_system(raw).device
    fits, spills = 1e6, 2e6  # footprints 2 MB and 4 MB against 0.75 * 4 MB usable
    ops = pd.DataFrame([{**op("norm", 0, fits, fits), "reread_bytes": fits},
                        {**op("norm", 0, spills, spills), "reread_bytes": spills},
                        {**op("strided", 0, fits, fits), "reread_bytes": fits},
                        {**op("norm", 0, fits, fits), "reread_bytes": 0.0}])
    costs = price_ops(ops, device)
    # the cached 1 MB costs 1 TB/s / 4 TB/s of its memory time: (0.25 + 1) us + 2 us overhead
    assert costs["duration_s"][0] == pytest.approx(3.25e-6)
    # 4 MB do not fit in 3 MB: everything from memory, 4 us + 2 us
    assert costs["duration_s"][1] == pytest.approx(6e-6)
    # a kernel bound by issuing scalar loads gains nothing; nor does an op that rereads nothing
    assert list(costs["duration_s"][2:]) == pytest.approx([4e-6, 4e-6])
    assert kernels.cached_read_bytes(*one(5.0, 10.0, 9.0))[0] == 0.0


def test_an_op_of_several_kernels_pays_each_kernels_overhead_and_caches_one_kernels_bytes():
    raw = json.loads(json.dumps(SYSTEM))
    raw["devices"]["gpu"]["memories"]["l2"] = {"kind": "sram", "capacity": "4 MB", "bandwidth": "4 TB/s"}
    raw["devices"]["gpu"]["default_memory"] = "hbm"
    device = validate_system(raw).device
    # 4 MB moved in all; as one kernel that footprint spills the 3 MB usable, as two kernels of
    # 2 MB each it fits, so the 1 MB reread costs a quarter of its memory time
    one_kernel = {**op("elementwise", 0, 2e6, 2e6), "reread_bytes": 1e6}
    two_kernels = {**op("elementwise", 0, 2e6, 2e6, attrs={"kernels": 2}), "reread_bytes": 1e6}
    costs = price_ops(pd.DataFrame([one_kernel, two_kernels]), device)
    # 4 us of memory + 2 us overhead; (3 + 0.25) us of memory + 2 x 2 us overhead
    assert list(costs["duration_s"]) == pytest.approx([6e-6, 7.25e-6])


def test_a_kernel_with_one_block_per_row_is_bound_by_its_blocks_at_small_batches():
    raw = json.loads(json.dumps(SYSTEM))
    raw["devices"]["gpu"]["compute"]["sm"]["block_bandwidth"] = "1 GB/s"
    raw["devices"]["gpu"]["calibration"] = {"source": "test", "block_bandwidth": {"norm": "2 GB/s"}}
    device = validate_system(raw).device
    rows = [op("strided", 0, 4e4, 4e4, attrs={"blocks": 4}),
            op("norm", 0, 4e4, 4e4, attrs={"blocks": 4}),
            op("strided", 0, 4e8, 4e8, attrs={"blocks": 40000}),
            op("strided", 0, 4e4, 4e4)]
    costs = price_ops(pd.DataFrame(rows), device)
    # 4 blocks of 2e4 B each at the datasheet 1 GB/s: 20 us (memory alone: 0.08 us), plus 2 us;
    # the norm's calibrated 2 GB/s halves it
    assert list(costs["duration_s"][:2]) == pytest.approx([22e-6, 12e-6])
    # rows as long over many blocks: memory's 800 us governs; an op that does not say its blocks
    # is not bound
    assert costs["duration_s"][2] == pytest.approx(802e-6)
    assert costs["duration_s"][3] == pytest.approx(2.08e-6)


def test_a_cpu_gemm_library_moves_its_operands_twice_where_a_gemv_streams_them_once():
    raw = json.loads(json.dumps(SYSTEM))
    raw["devices"]["gpu"]["memories"]["hbm"]["bandwidth"] = "10 GB/s"  # memory-bound at 8 rows
    unit = raw["devices"]["gpu"]["compute"]["sm"]
    unit["kind"] = "core"
    m, n, k = 8, 1024, 1024
    read, gemv_read = (m * k + k * n) * 2.0, (k + k * n) * 2.0
    ops = pd.DataFrame([op("gemm", 2 * m * n * k, read, m * n * 2.0, (1, m, n, k)),
                        op("gemm", 2 * n * k, gemv_read, n * 2.0, (1, 1, n, k))])
    packed = price_ops(ops, validate_system(raw).device)["duration_s"]
    unit["packs_gemm_operands"] = False
    plain = price_ops(ops, validate_system(raw).device)["duration_s"]
    # the packed copy of both operands: written, then read from the cache, at the memory's rate
    assert packed[0] - plain[0] == pytest.approx(read / 10e9)
    assert packed[1] == pytest.approx(plain[1])  # a GEMV streams its operands once
    gpu = validate_system(SYSTEM).device.compute["sm"]
    assert not packed_operand_bytes(np.array([read]), np.array([8.0]), np.array([1024.0]), gpu).any()


def test_a_batched_matmul_of_tiny_matrices_runs_as_a_scalar_loop_on_cpu_cores():
    raw = json.loads(json.dumps(SYSTEM))
    unit = raw["devices"]["gpu"]["compute"]["sm"]
    raw["devices"]["gpu"]["calibration"] = {"source": "test", "category_overhead": {"gemm": "5 us"},
                                           "scalar_loop_flops": "2 GFLOP/s"}
    # 128 matrices of 4x4x8 (128 multiply-adds each, under ATen's 400) and of 8x8x8 (512)
    loop, blas = (op("gemm", 2 * 128 * m * n * k, 0, 0, (128, m, n, k)) for m, n, k in ((4, 4, 8), (8, 8, 8)))
    gpu = price_ops(pd.DataFrame([loop, blas]), validate_system(raw).device)["duration_s"]
    unit["kind"] = "core"
    core = price_ops(pd.DataFrame([loop, blas]), validate_system(raw).device)["duration_s"]
    # 32768 FLOPs at the calibrated 2 GFLOP/s on one thread (16384 multiply-adds: one ATen grain)
    assert core[0] == pytest.approx(32768 / 2e9 + 5e-6)
    assert core[1] == pytest.approx(gpu[1]) and gpu[0] < 6e-6  # the library's kernels elsewhere
    # a batch of more multiply-adds than a grain splits over the unit's four cores
    big = op("gemm", 2 * 1024 * 128, 0, 0, (1024, 4, 4, 8))
    assert price_ops(pd.DataFrame([big]), validate_system(raw).device)["duration_s"][0] == \
        pytest.approx(2 * 1024 * 128 / 2e9 / 4 + 5e-6)
    # uncalibrated: one multiply-add per clock (1 GHz here)
    del raw["devices"]["gpu"]["calibration"]["scalar_loop_flops"]
    unit["clock"] = "1 GHz"
    assert price_ops(pd.DataFrame([loop]), validate_system(raw).device)["duration_s"][0] == \
        pytest.approx(32768 / 2e9 + 5e-6)


def test_fp32_matmuls_run_on_the_vector_units_unless_they_are_tf32():
    from memsim.cost.roofline import effective_peak

    raw = json.loads(json.dumps(SYSTEM))
    unit = raw["devices"]["gpu"]["compute"]["sm"]
    unit["matrix_flops"]["tf32"] = "2 TFLOP/s"
    unit["vector_flops"]["fp32"] = "0.5 TFLOP/s"
    unit["matrix_efficiency"], unit["vector_efficiency"] = 0.9, 0.8
    device = validate_system(raw).device
    sm = device.compute["sm"]
    assert effective_peak(sm, device, "fp32", matrix=True) == pytest.approx(0.5e12 * 0.8)
    assert effective_peak(sm, device, "tf32", matrix=True) == pytest.approx(2e12 * 0.9)
    assert effective_peak(sm, device, "bf16", matrix=True) == pytest.approx(4e12 * 0.9)


def test_a_kernel_that_appends_the_new_keys_pays_their_copies_at_the_cache_rate():
    def seconds(l2_bandwidth, appends):
        raw = json.loads(json.dumps(SYSTEM))
        raw["devices"]["gpu"]["memories"]["l2"] = {"kind": "sram", "capacity": "1 MiB", "bandwidth": l2_bandwidth}
        attrs = {"heads": 1, "kv_heads": 1, "value_dim": 128, "causal": True, "appends_kv": appends}
        row = op("attention", 2 * 2 * 64 * 32 * 128, 5e4, 2e4, (1, 64, 64, 128), attrs)
        return price_ops(pd.DataFrame([row]), validate_system(raw).device)["duration_s"][0]

    # 64 new tokens, one block of 64 rows, one pass over K/V (nothing for the cache to serve):
    # the block copies its 64 rows of K and V (2 x 128 x 2 B each), read and written, 65,536 B,
    # at the L2's rate (HBM's 1 TB/s times the cache's 4 or 8 TB/s over it)
    assert seconds("4 TB/s", True) - seconds("8 TB/s", True) == pytest.approx(65536 / 4e12 - 65536 / 8e12)
    assert seconds("4 TB/s", False) == seconds("8 TB/s", False)


def test_fused_attention_runs_at_a_fraction_of_the_gemm_rate():
    from memsim.cost.roofline import per_op_rates

    raw = json.loads(json.dumps(SYSTEM))
    raw["devices"]["gpu"]["compute"]["sm"]["attention_efficiency"] = 0.5
    device = validate_system(raw).device
    sm, hbm = device.compute["sm"], device.memories["hbm"]
    kinds, codes = [("gemm", "bf16"), ("attention", "bf16")], np.array([0, 1])
    peak, _, _ = per_op_rates(kinds, codes, sm, device, hbm)
    assert list(peak) == [4e12, 2e12]  # datasheet: half the GEMM rate
    raw["devices"]["gpu"]["calibration"] = {"source": "test", "matrix_efficiency": {"bf16": 0.5},
                                           "attention_efficiency": 0.25}
    device = validate_system(raw).device
    peak, _, _ = per_op_rates(kinds, codes, sm, device, hbm)
    assert list(peak) == [2e12, 0.5e12]  # calibrated: a quarter of the calibrated GEMM rate


def test_gemm_operand_rows_a_multiple_of_a_large_power_of_two_run_slower():
    # bf16 rows, 64 B interleave: K = 4096 is 8192 B = 2^13 (7 doublings past 2^6), K = 2752 is
    # 5504 B = 43 * 2^7 (one), K = 1376 is 43 * 2^6 and K = 4104 is 513 * 2^4 (none)
    k = np.array([4096.0, 2752.0, 1376.0, 4104.0])
    fraction = kernels.pitch_conflict_fraction(k, np.full(4, 2.0), np.full(4, 64.0), np.full(4, 0.02))
    assert list(fraction) == pytest.approx([1 / 1.14, 1 / 1.02, 1.0, 1.0])
    assert kernels.pitch_conflict_fraction(*one(4096, 2, 64, 0.0))[0] == 1.0  # no cost
    assert kernels.pitch_conflict_fraction(*one(4096, 2, 0, 0.02))[0] == 1.0  # no partitions (vector units)
    raw = json.loads(json.dumps(SYSTEM))
    raw["devices"]["gpu"]["compute"]["sm"]["load_alignment"] = "16 B"
    raw["devices"]["gpu"]["memories"]["hbm"]["granularity"] = "64 B"
    raw["devices"]["gpu"]["calibration"] = {"source": "test", "pitch_conflict_cost": 0.02}
    ops = pd.DataFrame([op("gemm", 2 * 256 * 512 * k, 0, 0, (1, 256, 512, k)) for k in (4096, 4160)])
    costs = price_ops(ops, validate_system(raw).device)
    # K = 4160 is 8320 B = 65 * 2^7: one doubling against K = 4096's seven
    per_k = costs["compute_s"] / np.array([4096, 4160])
    assert per_k[0] / per_k[1] == pytest.approx(1.14 / 1.02, rel=0.01)
    # fused attention's K and V rows are a token's kv_heads x head_dim apart: 32 x 128 bf16 is
    # 2^13 B (seven doublings), 24 x 128 is 3 * 2^11 B (five); the same work otherwise
    ops = pd.DataFrame([op("attention", heads * 4 * 1024 * 1024 * 128, 0, 0, (heads, 1024, 1024, 128),
                           attrs={"heads": heads, "kv_heads": heads}) for heads in (32, 24)])
    costs = price_ops(ops, validate_system(raw).device)
    per_head = costs["compute_s"] / np.array([32, 24])
    assert per_head[0] / per_head[1] == pytest.approx(1.14 / 1.10, rel=0.01)


def test_gemms_whose_rows_are_not_16_byte_aligned_load_narrower_and_run_slower():
    # bf16: N = 30522 is 61044 B per row, a multiple of 4 B only: 4/16 of the rate; K = 512 and
    # N = 4096 are aligned; fp32 N = 2798 is 11192 B, a multiple of 8 B: half the rate
    k, n = np.array([512.0, 512.0, 4096.0]), np.array([30522.0, 4096.0, 2798.0])
    fraction = kernels.aligned_fraction(k, n, np.array([2.0, 2.0, 4.0]), np.full(3, 16.0))
    assert list(fraction) == [0.25, 1.0, 0.5]
    assert kernels.aligned_fraction(*one(512, 30522, 2, 0))[0] == 1.0  # no alignment requirement
    raw = json.loads(json.dumps(SYSTEM))
    raw["devices"]["gpu"]["compute"]["sm"]["load_alignment"] = "16 B"
    ops = pd.DataFrame([op("gemm", 2 * 256 * n * 512, 0, 0, (1, 256, n, 512)) for n in (4096, 4090)])
    costs = price_ops(ops, validate_system(raw).device)
    # N = 4090 (8180 B a row, a multiple of 4 B): a quarter of the rate on ~the same work
    assert costs["compute_s"][1] == pytest.approx(4 * costs["compute_s"][0], rel=0.01)


def test_op_arrays_read_the_table_once_as_pricing_reads_it():
    from memsim.cost.op_arrays import OpArrays
    from memsim.validate.readers import gemm_row, op_row

    table = pd.DataFrame([gemm_row("mm", "bf16", 1, 8, 64, 32, 0.0, 8),
                          op_row("rope", "strided", "fp16", 0, 100, 100, 0.0, 8, attrs={"blocks": 8}),
                          op_row("add3", "elementwise", "fp8", 0, 300, 100, 0.0, 8, attrs={"kernels": 2}),
                          op_row("odd", "elementwise", "nf4", 0, 10, 10, 0.0, 8),
                          gemm_row("mm", "bf16", 1, 16, 64, 32, 0.0, 16)]).set_index(pd.Index([5, 6, 7, 8, 9]))
    arrays = OpArrays.from_table(table)
    assert [arrays.kinds[code] for code in arrays.kind_codes] == list(zip(table["category"], table["dtype"]))
    assert len(arrays.kinds) == 4  # the two GEMMs share one kind
    assert list(arrays.elem_bytes) == [2.0, 2.0, 1.0, 4.0, 2.0]  # an unknown dtype counts 4 bytes
    assert list(arrays.launches) == [1.0, 1.0, 2.0, 1.0, 1.0]
    assert list(arrays.column("blocks")) == [0.0, 8.0, 0.0, 0.0, 0.0]
    device = load_system("nvidia-h100-sxm").device
    priced = price_ops(arrays, device)
    assert list(priced.index) == [5, 6, 7, 8, 9]
    pd.testing.assert_frame_equal(priced, price_ops(table, device))


def test_kv_cache_blocks_stream_at_a_calibrated_rate_only():
    from memsim.validate.readers import attention_row

    # a decode of one sequence, 8 query heads over 2 KV heads, 256 keys of head dim 128: 2 blocks,
    # each split in 2 by flash-attn's heuristic (2 key blocks of 128 keys, 8 slots on 4 units):
    # 4 jobs, one partial wave streaming at 4 x the per-block rate
    ops = pd.DataFrame([attention_row("decode", "bf16", 1, 8, 2, 1, 256, 128, False, 0.0, 1, appends_kv=True)])

    def memory(unit_rate=None, calibrated_rate=None):
        raw = json.loads(json.dumps(SYSTEM))
        if unit_rate:
            raw["devices"]["gpu"]["compute"]["sm"]["block_bandwidth"] = unit_rate
        if calibrated_rate:
            raw["devices"]["gpu"]["calibration"] = {"source": "test", "block_bandwidth": {"attention": calibrated_rate}}
        return price_ops(ops, validate_system(raw).device)["memory_s"][0]

    # the unit's datasheet rate (of kernels loading an element per thread) is not this kernel's
    assert memory(unit_rate="1 GB/s") == memory() == pytest.approx(memory(calibrated_rate="1 PB/s"))
    # at 1 and 2 GB/s a block the K/V traffic T takes T / 4 and T / 8 GB/s: T from their difference
    traffic = (memory(calibrated_rate="1 GB/s") - memory(calibrated_rate="2 GB/s")) * 8e9
    assert traffic > 0
    assert memory(calibrated_rate="1 GB/s") - memory() == pytest.approx(traffic / 4e9 - traffic / 1e12)


def test_the_power_cap_slows_matrix_ops_once_recent_matrix_time_passes_its_threshold():
    # window 0.1 s, threshold 0.55, capped rate 1e12 FLOP/s; each op priced at 10 ms
    start = np.array([0.0, 0.2, 0.2 + 0.01, 0.3 + 0.1 + 0.01])
    busy = np.array([0.2, 0.01, 0.1, 0.01])
    matrix = np.array([True, True, False, True])
    flops = np.full(4, 2e10)        # 20 ms at the capped rate
    seconds = np.full(4, 0.01)
    rate = np.full(4, 1e12)
    out = kernels.power_capped_seconds(start, busy, matrix, flops, seconds, rate, 0.55, 0.1, False)
    # op 0 starts idle (duty 0): not capped. After 0.2 s of matrix work the duty is
    # 1 - e^-2 = 0.865: op 1 runs capped, 2e10 / 1e12 = 20 ms. Op 2 is not a matrix op. Op 3
    # follows 0.1 s of other work and a 0.1 s gap: 0.865..., then (after op 1's 10 ms)
    # 1 - 0.135 e^-0.1 = 0.878, times e^-1 (op 2) and e^-1 (gap) = 0.119 < 0.55: not capped.
    assert out == pytest.approx([0.01, 0.02, 0.01, 0.01])


def test_a_periodic_step_starts_from_its_own_steady_power_state():
    # one step: 50 ms of matrix work, then 50 ms of other work, window 0.1 s. From idle the step
    # leaves a = (1 - e^-0.5) e^-0.5 = 0.2387; the steady state is a / (1 - e^-1) = 0.3776.
    start, busy = np.array([0.0, 0.05]), np.array([0.05, 0.05])
    matrix, flops, seconds, rate = np.array([True, False]), np.full(2, 1e11), np.full(2, 0.05), np.full(2, 1e12)
    for engage, capped in ((0.37, True), (0.39, False)):
        out = kernels.power_capped_seconds(start, busy, matrix, flops, seconds, rate, engage, 0.1, True)
        assert out[0] == pytest.approx(0.1 if capped else 0.05)
    # from idle nothing is capped, whatever the threshold above 0
    assert kernels.power_capped_seconds(start, busy, matrix, flops, seconds, rate, 0.01, 0.1, False)[0] == 0.05


def test_the_duty_of_a_repeated_pass_is_that_of_its_passes_run_one_by_one():
    # two groups: [GEMM 3 ms, other 1 ms, GEMM 2 ms] 30 times before the measured pass, then
    # [other 2 ms, GEMM 1 ms] 5 times; from idle each, far apart
    group = np.array([7, 7, 7, 3, 3])
    passes_before = np.array([30.0, 30.0, 30.0, 5.0, 5.0])
    busy = np.array([0.003, 0.001, 0.002, 0.002, 0.001])
    matrix = np.array([True, False, True, False, True])
    duty = kernels.repeated_pass_duty(group, passes_before, busy, matrix, 0.1)
    for rows, passes in ((np.arange(3), 31), (np.arange(3, 5), 6)):
        runs = np.tile(rows, passes)
        start = np.cumsum(busy[runs]) - busy[runs]
        # the duty at each run's start, from the timeline kernel: an op is capped at 1 FLOP/s
        # (priced 1 s) exactly when its start duty reaches the threshold, so sweep thresholds
        for engage in np.linspace(0.05, 0.95, 19):
            out = kernels.power_capped_seconds(start, busy[runs], matrix[runs], np.ones(runs.size), busy[runs],
                                               np.ones(runs.size), engage, 0.1, False)
            last = out[-rows.size:]
            assert ((last == 1.0) == ((duty[rows] >= engage) & matrix[rows])).all()


def test_a_long_prefill_on_an_h100_runs_its_gemms_at_the_power_capped_rate_and_a_decode_does_not():
    from memsim.engine.replay import simulate
    from memsim.trace.workload import StepSpec, trace_workload

    uncapped = {"devices.gpu.compute.sm.power_cap.engage_duty": "1.0"}  # a duty never reaches 1
    unit = load_system("nvidia-h100-sxm").device.compute["sm"]
    capped_rate = unit.power_cap.sustained_matrix_fraction * unit.matrix_flops["bf16"]
    for phase, batch, slower in (("prefill", 4, True), ("decode", 64, False)):
        trace = trace_workload("llama2-7b", StepSpec(phase=phase, batch=batch, context=2048), {"layers": "4"})
        steps = []
        for override in ({}, uncapped):
            timeline = simulate(trace, load_system("nvidia-h100-sxm", override)).timeline
            steps.append(timeline["end_s"].max())
            gemms = timeline[(timeline["kind"] == "op") & (timeline["category"] == "gemm")]
            rates = gemms["flops"] / (gemms["end_s"] - gemms["start_s"])
            if not override and slower:
                assert rates.max() <= capped_rate * 1.001   # every large GEMM held to the cap
        assert (steps[0] > steps[1] * 1.03) == slower


def test_since_reuse_counts_the_kinds_and_bytes_between_an_op_and_its_kinds_last_run():
    # kinds a b a c d b b a moving 0..7 bytes. The second a (op 2): b between, 1 byte. The
    # second b (op 5): a c d between, 2 + 3 + 4 bytes; the third b: nothing between; the last a
    # (op 7): c d b between (ops 3-6), 3 + 4 + 5 + 6 bytes. First runs: inf.
    kinds, moved = kernels.since_reuse(np.array([0, 1, 0, 2, 3, 1, 1, 0]), np.arange(8.0), 100, 1e9)
    np.testing.assert_array_equal(kinds, [np.inf, np.inf, 1, np.inf, np.inf, 3, 0, 3])
    np.testing.assert_array_equal(moved, [np.inf, np.inf, 1, np.inf, np.inf, 9, 0, 18])
    # past 10 bytes between, or past 2 ops between, an op counts as cold
    kinds, moved = kernels.since_reuse(np.array([0, 1, 0, 2, 3, 1, 1, 0]), np.arange(8.0), 100, 10.0)
    np.testing.assert_array_equal(moved, [np.inf, np.inf, 1, np.inf, np.inf, 9, 0, np.inf])
    kinds, _ = kernels.since_reuse(np.array([0, 1, 0, 2, 3, 1, 1, 0]), np.arange(8.0), 2, 1e9)
    np.testing.assert_array_equal(kinds, [np.inf, np.inf, 1, np.inf, np.inf, np.inf, 0, np.inf])


def test_a_traces_first_op_of_a_kind_follows_the_previous_steps_ops():
    # one step a b a c moving 1, 2, 4, 8 bytes, run in a loop: the first a follows the step
    # before's c (8 B since that step's second a); the b follows a c, then this step's a (4 + 8 +
    # 1 B); the c follows a b a (1 + 2 + 4 B).
    from memsim.cost.op_arrays import since_reuse

    step = pd.DataFrame({"name": ["a", "b", "a", "c"], "bytes_read": [1.0, 2.0, 4.0, 8.0],
                         "bytes_written": [0.0] * 4})
    kinds, moved = since_reuse(step)
    np.testing.assert_array_equal(kinds, [1, 2, 1, 2])
    np.testing.assert_array_equal(moved, [8, 13, 2, 7])
    # with only names a table has no bytes to count; none at all: cold
    assert np.isinf(since_reuse(pd.DataFrame({"m": [1.0]}))[0]).all()


def test_a_row_wise_ops_fixed_cost_grows_with_its_rows():
    # 40 ns a row of a norm on top of its 5 us: 4096 rows add 163.84 us, 4 rows 0.16 us; an
    # elementwise op with a row count (none is recorded for one) has no row cost calibrated
    system = load_system("generic-x86-cpu")
    calibration = Calibration(source="test", category_overhead={"norm": 5e-6, "elementwise": 1e-6},
                              row_cost={"norm": 4e-8})
    device = system.device.model_copy(update={"calibration": calibration})
    ops = pd.DataFrame([op_row("layer_norm", "norm", "fp32", 0.0, 0.0, 0.0, 0.0, 1.0, attrs={"rows": 4096}),
                        op_row("layer_norm", "norm", "fp32", 0.0, 0.0, 0.0, 0.0, 1.0, attrs={"rows": 4}),
                        op_row("add", "elementwise", "fp32", 0.0, 0.0, 0.0, 0.0, 1.0, attrs={"rows": 4})])
    np.testing.assert_allclose(price_ops(ops, device)["overhead_s"], [5e-6 + 163.84e-6, 5.16e-6, 1e-6])


def test_a_cpu_ops_fixed_cost_falls_with_its_warmth():
    # warm_overhead {0: 0.5, 1000: 0.5, 3000: 1.0}, 100 B per kind between. One step a b a c b,
    # run in a loop, each op reading 400 B; reuse distance = bytes between + 100 B per kind:
    # first a: the step before's c b, 800 + 200 = 1000 B -> 0.5; b: a, 400 + 100 -> 0.5; second
    # a: b -> 0.5; c: the step before's b, then a b a, 1600 + 200 = 1800 B -> 0.5 + 0.5 x 800 /
    # 2000 = 0.7; last b: a c, 1000 B -> 0.5. Of a fixed cost of 10 us.
    system = load_system("generic-x86-cpu")
    calibration = Calibration(source="test", category_overhead={"elementwise": 1e-5},
                              warm_overhead={0: 0.5, 1000: 0.5, 3000: 1.0}, kind_footprint=100.0)
    device = system.device.model_copy(update={"calibration": calibration})
    ops = pd.DataFrame([op_row(name, "elementwise", "fp32", 0.0, 400.0, 0.0, 0.0, 1.0) for name in "abacb"])
    overhead = price_ops(ops, device)["overhead_s"].to_numpy()
    np.testing.assert_allclose(overhead, [5e-6, 5e-6, 5e-6, 7e-6, 5e-6])
    # a GPU's (or an uncalibrated) fixed cost is the same wherever the op runs
    plain = price_ops(ops, system.device)["overhead_s"].to_numpy()
    assert np.unique(plain).size == 1
