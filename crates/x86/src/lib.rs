//! x86-64 machine code (AVX2+FMA or AVX-512F) for one stage plan.
