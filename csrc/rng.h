/* Seeded random numbers for the core (PCG32, O'Neill 2014): weight init,
 * minibatch shuffling, SmoothGrad noise. Same seed -> same stream on every
 * platform; no global state. */
#ifndef UQ_RNG_H
#define UQ_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t state;
    uint64_t inc; /* stream selector, always odd */
} uq_rng;

/* `stream` separates independent streams of one seed (e.g. member index). */
void uq_rng_seed(uq_rng *rng, uint64_t seed, uint64_t stream);
uint32_t uq_rng_u32(uq_rng *rng);
/* uniform in [0, 1) with 24 random bits */
float uq_rng_uniform(uq_rng *rng);
/* standard normal (Box-Muller) */
float uq_rng_normal(uq_rng *rng);
/* uniform integer in [0, n), unbiased (Lemire's method) */
uint32_t uq_rng_below(uq_rng *rng, uint32_t n);
/* Fisher-Yates shuffle of idx[0..n) */
void uq_rng_shuffle(uq_rng *rng, int64_t *idx, size_t n);

#endif
