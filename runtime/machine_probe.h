// What this machine can do at best, measured: read bandwidth from DRAM and arithmetic peaks, per
// thread count. `sputnik bench` divides by the bandwidth for its roofline; bench/kernels_bench
// reports each kernel as a share of all three.
#pragma once

namespace sputnik {

// Peak read bandwidth in bytes/s with n_threads threads, each pinned to its own CPU, reading its
// slice of a 1 GiB buffer as four streams; best of several trials (STREAM-style).
double measure_read_bandwidth(int n_threads);

// Peak f32 fused multiply-add rate in FLOP/s (2 per lane) with n_threads threads, on the widest
// vectors this CPU has (AVX-512 or AVX2); 0 on CPUs with neither.
double measure_f32_fma_peak(int n_threads);

// Peak 8-bit dot-product rate in OP/s (2 per multiply-accumulate) with n_threads threads, as the
// quantised matmuls compute (AVX-512 VNNI vpdpbusd); 0 where the CPU lacks AVX-512 VNNI.
double measure_int8_dot_peak(int n_threads);

}  // namespace sputnik
