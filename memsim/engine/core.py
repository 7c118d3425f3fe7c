"""The discrete-event loop: tasks made of flows, sharing channels max-min fairly.

A task (an op, a copy, a collective) becomes ready when the tasks it depends on have ended (or,
for start dependencies, begun); it begins at max(ready, its host issue time), spends its fixed
overhead, then starts its flows; it ends when all of them have ended. Every change of the set of
flows recomputes the rates (max-min fair, weighted by bytes per unit of each channel) and moves
the clock to the next change: one event per change, never per byte. Events at the same time are
handled in (time, kind, task id) order, so the same inputs give the same timeline bit for bit.

The loop is compiled with numba: simpy's own per-event cost (~0.7 us) would by itself spend the
whole budget the benchmark allows per op, so this loop keeps simpy's semantics (a clock and a
queue of timed events) in compiled code.
"""
from __future__ import annotations

import numba
import numpy as np

BEGIN = 0
FLOWS = 1
NO_OVERFLOW = -1


@numba.njit(cache=True)
def fair_rates(active, n_active, hop_ptr, hop_channel, hop_weight, capacity, rate, cap_left, wsum, frozen, touched):
    """Max-min fair rates of the active flows by progressive filling (written into `rate`)."""
    n_touched = 0
    for i in range(n_active):
        f = active[i]
        rate[f] = 0.0
        frozen[f] = False
        for h in range(hop_ptr[f], hop_ptr[f + 1]):
            c = hop_channel[h]
            if wsum[c] >= 0.0:
                wsum[c] = -1.0
                cap_left[c] = capacity[c]
                touched[n_touched] = c
                n_touched += 1
    unfrozen = n_active
    while unfrozen > 0:
        for j in range(n_touched):
            wsum[touched[j]] = 0.0
        for i in range(n_active):
            f = active[i]
            if not frozen[f]:
                for h in range(hop_ptr[f], hop_ptr[f + 1]):
                    wsum[hop_channel[h]] += hop_weight[h]
        best = np.inf
        bottleneck = -1
        for j in range(n_touched):
            c = touched[j]
            if wsum[c] > 0.0:
                level = max(cap_left[c], 0.0) / wsum[c]
                if level < best:
                    best = level
                    bottleneck = c
        if bottleneck < 0:
            break
        for i in range(n_active):
            f = active[i]
            if frozen[f]:
                continue
            on = False
            for h in range(hop_ptr[f], hop_ptr[f + 1]):
                if hop_channel[h] == bottleneck:
                    on = True
            if on:
                rate[f] = best
                frozen[f] = True
                unfrozen -= 1
                for h in range(hop_ptr[f], hop_ptr[f + 1]):
                    cap_left[hop_channel[h]] -= hop_weight[h] * best
    for j in range(n_touched):
        wsum[touched[j]] = 0.0


@numba.njit(cache=True)
def _push(heap_time, heap_key, size, time, key):
    i = size
    heap_time[i] = time
    heap_key[i] = key
    while i > 0:
        parent = (i - 1) // 2
        if heap_time[parent] < heap_time[i] or (heap_time[parent] == heap_time[i] and heap_key[parent] <= heap_key[i]):
            break
        heap_time[i], heap_time[parent] = heap_time[parent], heap_time[i]
        heap_key[i], heap_key[parent] = heap_key[parent], heap_key[i]
        i = parent
    return size + 1


@numba.njit(cache=True)
def _pop(heap_time, heap_key, size):
    size -= 1
    heap_time[0] = heap_time[size]
    heap_key[0] = heap_key[size]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= size:
            break
        child = left
        right = left + 1
        if right < size and (heap_time[right] < heap_time[left]
                             or (heap_time[right] == heap_time[left] and heap_key[right] < heap_key[left])):
            child = right
        if heap_time[i] < heap_time[child] or (heap_time[i] == heap_time[child] and heap_key[i] <= heap_key[child]):
            break
        heap_time[i], heap_time[child] = heap_time[child], heap_time[i]
        heap_key[i], heap_key[child] = heap_key[child], heap_key[i]
        i = child
    return size


@numba.njit(cache=True)
def _grow(array, size):
    if size < array.shape[0]:
        return array
    bigger = np.empty(array.shape[0] * 2, array.dtype)
    bigger[:array.shape[0]] = array
    return bigger


@numba.njit(cache=True)
def run_tasks(issue_s, overhead_s, flow_ptr, flow_volume, hop_ptr, hop_channel, hop_weight,
              succ_ptr, succ, start_succ_ptr, start_succ, indegree,
              alloc_ptr, alloc_tier, alloc_bytes, free_ptr, free_tier, free_bytes,
              capacity, tier_capacity, tier_initial):
    """Run every task to its end (or to the first tier overflow).

    Returns per task: start, end, the flow that ended last; per channel: the work done (units
    moved); samples of tier occupancy (time, tier, bytes) and of channel load (time, channel,
    share); and the overflowing tier and task, or NO_OVERFLOW and -1.
    """
    n_tasks = issue_s.shape[0]
    n_flows = flow_volume.shape[0]
    n_channels = capacity.shape[0]
    start = np.full(n_tasks, np.nan)
    end = np.full(n_tasks, np.nan)
    last_flow = np.full(n_tasks, -1, np.int64)
    pending = indegree.copy()
    issue = issue_s.copy()
    flows_left = np.zeros(n_tasks, np.int64)
    flow_task = np.empty(n_flows, np.int64)
    for t in range(n_tasks):
        for f in range(flow_ptr[t], flow_ptr[t + 1]):
            flow_task[f] = t
    remaining = flow_volume.copy()
    rate = np.zeros(n_flows)
    frozen = np.zeros(n_flows, np.bool_)
    active = np.empty(n_flows + 1, np.int64)
    n_active = 0
    cap_left = np.zeros(n_channels)
    wsum = np.zeros(n_channels)
    touched = np.empty(n_channels, np.int64)
    load = np.zeros(n_channels)
    work = np.zeros(n_channels)
    heap_time = np.empty(2 * n_tasks + 1)
    heap_key = np.empty(2 * n_tasks + 1, np.int64)
    heap_size = 0
    stack = np.empty(n_tasks + 1, np.int64)
    occupied = tier_initial.copy()
    n_samples = 0
    sample_time = np.empty(alloc_tier.shape[0] + free_tier.shape[0] + 1)
    sample_tier = np.empty(alloc_tier.shape[0] + free_tier.shape[0] + 1, np.int64)
    sample_bytes = np.empty(alloc_tier.shape[0] + free_tier.shape[0] + 1)
    n_bw = 0
    bw_time = np.empty(64)
    bw_channel = np.empty(64, np.int64)
    bw_load = np.empty(64)
    overflow_tier = NO_OVERFLOW
    overflow_task = -1
    now = 0.0
    dirty = False

    n_stack = 0
    for t in range(n_tasks):
        if pending[t] == 0:
            stack[n_stack] = t
            n_stack += 1
    # Tasks ready at time zero begin in id order.
    stack[:n_stack] = stack[:n_stack][::-1]

    while True:
        # Begin every task that is ready now (its dependencies met); later issue times wait in the heap.
        while n_stack > 0:
            n_stack -= 1
            t = stack[n_stack]
            if issue[t] > now:
                heap_size = _push(heap_time, heap_key, heap_size, issue[t], BEGIN * n_tasks + t)
                continue
            start[t] = now
            for a in range(alloc_ptr[t], alloc_ptr[t + 1]):
                k = alloc_tier[a]
                occupied[k] += alloc_bytes[a]
                sample_time[n_samples] = now
                sample_tier[n_samples] = k
                sample_bytes[n_samples] = occupied[k]
                n_samples += 1
                if occupied[k] > tier_capacity[k] * (1.0 + 1e-12) and overflow_tier == NO_OVERFLOW:
                    overflow_tier = k
                    overflow_task = t
            for j in range(start_succ_ptr[t], start_succ_ptr[t + 1]):
                s = start_succ[j]
                pending[s] -= 1
                if pending[s] == 0:
                    stack[n_stack] = s
                    n_stack += 1
            heap_size = _push(heap_time, heap_key, heap_size, now + overhead_s[t], FLOWS * n_tasks + t)
        if overflow_tier != NO_OVERFLOW:
            break

        if heap_size > 0 and heap_time[0] <= now:
            key = heap_key[0]
            heap_size = _pop(heap_time, heap_key, heap_size)
            kind = key // n_tasks
            t = key - kind * n_tasks
            if kind == BEGIN:
                issue[t] = now
                stack[n_stack] = t
                n_stack += 1
                continue
            for f in range(flow_ptr[t], flow_ptr[t + 1]):
                if remaining[f] > 0.0:
                    active[n_active] = f
                    n_active += 1
                    flows_left[t] += 1
                    dirty = True
            if flows_left[t] == 0:
                n_samples = _end(t, now, end, free_ptr, free_tier, free_bytes, occupied,
                                 sample_time, sample_tier, sample_bytes, n_samples)
                n_stack = _released(t, succ_ptr, succ, pending, stack, n_stack)
            continue

        if dirty:
            fair_rates(active, n_active, hop_ptr, hop_channel, hop_weight, capacity, rate,
                       cap_left, wsum, frozen, touched)
            for c in range(n_channels):
                cap_left[c] = 0.0
            for i in range(n_active):
                f = active[i]
                for h in range(hop_ptr[f], hop_ptr[f + 1]):
                    cap_left[hop_channel[h]] += hop_weight[h] * rate[f]
            for c in range(n_channels):
                level = cap_left[c] / capacity[c]
                if level != load[c]:
                    load[c] = level
                    bw_time = _grow(bw_time, n_bw)
                    bw_channel = _grow(bw_channel, n_bw)
                    bw_load = _grow(bw_load, n_bw)
                    bw_time[n_bw] = now
                    bw_channel[n_bw] = c
                    bw_load[n_bw] = level
                    n_bw += 1
            dirty = False

        next_flow = np.inf
        first = -1
        for i in range(n_active):
            f = active[i]
            if rate[f] > 0.0:
                finish = now + remaining[f] / rate[f]
                if finish < next_flow:
                    next_flow = finish
                    first = i
        next_event = heap_time[0] if heap_size > 0 else np.inf
        if first < 0 and heap_size == 0:
            break
        target = next_event if next_event <= next_flow else next_flow
        step = target - now
        for i in range(n_active):
            f = active[i]
            moved = rate[f] * step
            remaining[f] -= moved
            for h in range(hop_ptr[f], hop_ptr[f + 1]):
                work[hop_channel[h]] += moved * hop_weight[h]
        now = target
        if next_event <= next_flow:
            continue
        # Retire every flow that has (numerically) finished; end the tasks they complete.
        remaining[active[first]] = 0.0
        i = 0
        while i < n_active:
            f = active[i]
            if remaining[f] <= flow_volume[f] * 1e-12:
                n_active -= 1
                active[i] = active[n_active]
                dirty = True
                t = flow_task[f]
                flows_left[t] -= 1
                last_flow[t] = f
                if flows_left[t] == 0:
                    n_samples = _end(t, now, end, free_ptr, free_tier, free_bytes, occupied,
                                     sample_time, sample_tier, sample_bytes, n_samples)
                    n_stack = _released(t, succ_ptr, succ, pending, stack, n_stack)
            else:
                i += 1

    return (start, end, last_flow, work, sample_time[:n_samples], sample_tier[:n_samples],
            sample_bytes[:n_samples], bw_time[:n_bw], bw_channel[:n_bw], bw_load[:n_bw],
            overflow_tier, overflow_task)


@numba.njit(cache=True)
def _end(t, now, end, free_ptr, free_tier, free_bytes, occupied, sample_time, sample_tier, sample_bytes, n_samples):
    """Record t's end and free what it releases; returns the new sample count."""
    end[t] = now
    for a in range(free_ptr[t], free_ptr[t + 1]):
        k = free_tier[a]
        occupied[k] -= free_bytes[a]
        sample_time[n_samples] = now
        sample_tier[n_samples] = k
        sample_bytes[n_samples] = occupied[k]
        n_samples += 1
    return n_samples


@numba.njit(cache=True)
def _released(t, succ_ptr, succ, pending, stack, n_stack):
    """Count down the tasks waiting on t's end; push those now ready (in reverse, so ids pop in order)."""
    for j in range(succ_ptr[t + 1] - 1, succ_ptr[t] - 1, -1):
        s = succ[j]
        pending[s] -= 1
        if pending[s] == 0:
            stack[n_stack] = s
            n_stack += 1
    return n_stack
