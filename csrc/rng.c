#include "rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void uq_rng_seed(uq_rng *rng, uint64_t seed, uint64_t stream) {
    uint64_t s = seed;
    uint64_t t = stream ^ 0xDA3E39CB94B95BDBull;
    rng->state = 0;
    rng->inc = (splitmix64(&t) << 1) | 1u;
    uq_rng_u32(rng);
    rng->state += splitmix64(&s);
    uq_rng_u32(rng);
}

uint32_t uq_rng_u32(uq_rng *rng) {
    uint64_t old = rng->state;
    rng->state = old * 6364136223846793005ull + rng->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
}

float uq_rng_uniform(uq_rng *rng) { return (float)(uq_rng_u32(rng) >> 8) * (1.0f / 16777216.0f); }

float uq_rng_normal(uq_rng *rng) {
    /* u1 in (0, 1] so the log is finite */
    double u1 = ((double)(uq_rng_u32(rng) >> 8) + 1.0) / 16777216.0;
    double u2 = (double)(uq_rng_u32(rng) >> 8) / 16777216.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint32_t uq_rng_below(uq_rng *rng, uint32_t n) {
    uint64_t m = (uint64_t)uq_rng_u32(rng) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while (low < threshold) {
            m = (uint64_t)uq_rng_u32(rng) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void uq_rng_shuffle(uq_rng *rng, int64_t *idx, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = uq_rng_below(rng, (uint32_t)i);
        int64_t tmp = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = tmp;
    }
}
