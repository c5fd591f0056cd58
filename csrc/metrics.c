/* OOD detection, calibration and histogram metrics (see metrics.h). */
#include "metrics.h"

/* These match NumPy and scikit-learn bit for bit (histogram edges, ROC thresholds), so every
 * a * b + c rounds twice here, as there: no fused multiply-adds (the build contracts elsewhere). */
#pragma GCC optimize("fp-contract=off")

#include <math.h>
#include <stdlib.h>

/* ---------------------------------------------------------------- OOD ---- */

static int cmp_desc(const void *pa, const void *pb) {
    const double a = *(const double *)pa, b = *(const double *)pb;
    return (a < b) - (a > b);
}

/* index of the first NaN in x, or n if none */
static size_t first_nan(const double *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (isnan(x[i])) return i;
    return n;
}

/* Walks the distinct thresholds t from the highest down over positives pos (P)
 * and negatives neg (N), both sorted in descending order. At each t, tp = #pos
 * >= t and fp = #neg >= t: the ROC point (fp / N, tp / P) of sklearn's
 * roc_curve and the precision tp / (tp + fp) of precision_recall_curve. */
static void walk_curve(const double *pos, size_t P, const double *neg, size_t N, double tpr_level, double *auroc,
                       double *ap, double *fpr) {
    size_t i = 0, j = 0;
    double area2 = 0.0, ap_sum = 0.0; /* area2: twice the area, in counts */
    int found = 0;
    *fpr = 1.0;
    while (i < P || j < N) {
        double t;
        if (i < P && j < N) t = pos[i] > neg[j] ? pos[i] : neg[j];
        else t = i < P ? pos[i] : neg[j];
        const size_t i0 = i, j0 = j;
        while (i < P && pos[i] == t) i++;
        while (j < N && neg[j] == t) j++;
        area2 += (double)(j - j0) * (double)(i + i0);
        if (i > i0) ap_sum += (double)(i - i0) * ((double)i / (double)(i + j));
        /* tpr computed as sklearn does (tps / tps[-1]) so that ">=" agrees bit for bit */
        if (!found && (double)i / (double)P >= tpr_level) {
            *fpr = (double)j / (double)N;
            found = 1;
        }
    }
    *auroc = area2 / (2.0 * (double)P * (double)N);
    *ap = ap_sum / (double)P;
}

uq_status uq_ood_metrics(uq_ood_result *res, const double *scores_in, size_t n_in, const double *scores_out,
                         size_t n_out, uq_fpr_convention convention, double tpr_level) {
    if (n_in < 1) return uq_fail(UQ_ERR_VALUE, "scores_in is empty: need at least 1 in-distribution score");
    if (n_out < 1) return uq_fail(UQ_ERR_VALUE, "scores_out is empty: need at least 1 OOD score");
    if (convention != UQ_FPR_OOD_POSITIVE && convention != UQ_FPR_ID_POSITIVE)
        return uq_fail(UQ_ERR_VALUE, "unknown FPR convention %d", (int)convention);
    if (!(tpr_level > 0.0 && tpr_level <= 1.0))
        return uq_fail(UQ_ERR_VALUE, "TPR level must be in (0, 1], got %g", tpr_level);
    size_t k;
    if ((k = first_nan(scores_in, n_in)) < n_in)
        return uq_fail(UQ_ERR_VALUE, "scores_in contains NaN (first at index %zu)", k);
    if ((k = first_nan(scores_out, n_out)) < n_out)
        return uq_fail(UQ_ERR_VALUE, "scores_out contains NaN (first at index %zu)", k);
    const size_t n = n_in + n_out;
    if (n < n_in || n > SIZE_MAX / (2 * sizeof(double))) return uq_fail(UQ_ERR_NOMEM, "too many scores (%zu + %zu)", n_in, n_out);
    double *buf = uq_malloc(2 * n * sizeof(double));
    if (!buf) return uq_fail(UQ_ERR_NOMEM, "out of memory sorting %zu scores", n);
    double *in = buf, *out = buf + n_in;        /* sorted descending */
    double *nin = buf + n, *nout = nin + n_in;  /* negated, sorted descending */
    for (size_t i = 0; i < n_in; i++) in[i] = scores_in[i];
    for (size_t i = 0; i < n_out; i++) out[i] = scores_out[i];
    qsort(in, n_in, sizeof(double), cmp_desc);
    qsort(out, n_out, sizeof(double), cmp_desc);
    for (size_t i = 0; i < n_in; i++) nin[i] = -in[n_in - 1 - i];
    for (size_t i = 0; i < n_out; i++) nout[i] = -out[n_out - 1 - i];

    double fpr_ood, fpr_id, auroc_id;
    walk_curve(out, n_out, in, n_in, tpr_level, &res->auroc, &res->aupr_out, &fpr_ood);
    walk_curve(nin, n_in, nout, n_out, tpr_level, &auroc_id, &res->aupr_in, &fpr_id);
    res->fpr = convention == UQ_FPR_OOD_POSITIVE ? fpr_ood : fpr_id;
    uq_free(buf);
    return UQ_OK;
}

/* -------------------------------------------------------- calibration ---- */

uq_status uq_calibration(uq_calib_result *res, double *bin_lower, double *bin_upper, int64_t *bin_count,
                         double *bin_conf, double *bin_acc, const float *probs, const int32_t *labels, size_t n,
                         int n_classes, int n_bins) {
    if (n < 1) return uq_fail(UQ_ERR_VALUE, "probs is empty: need at least 1 sample");
    if (n_classes < 1) return uq_fail(UQ_ERR_VALUE, "need at least 1 class, got %d", n_classes);
    if (n_bins < 1) return uq_fail(UQ_ERR_VALUE, "n_bins must be >= 1, got %d", n_bins);
    const size_t C = (size_t)n_classes, B = (size_t)n_bins;
    for (size_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= n_classes)
            return uq_fail(UQ_ERR_VALUE, "labels[%zu] = %d is outside [0, %d)", i, (int)labels[i], n_classes);
    for (size_t i = 0; i < n * C; i++)
        if (!(probs[i] >= 0.0f && probs[i] <= 1.0f))
            return uq_fail(UQ_ERR_VALUE, "probs[%zu, %zu] = %g is not a probability in [0, 1]", i / C, i % C,
                           (double)probs[i]);

    /* edges as numpy.linspace(0, 1, B + 1); scratch: edges, confidence sums, counts, correct counts */
    double *edges = uq_malloc((B + 1) * sizeof(double));
    double *conf_sum = uq_calloc(B * sizeof(double));
    int64_t *cnt = uq_calloc(B * sizeof(int64_t)), *hit = uq_calloc(B * sizeof(int64_t));
    if (!edges || !conf_sum || !cnt || !hit) {
        uq_free(edges); uq_free(conf_sum); uq_free(cnt); uq_free(hit);
        return uq_fail(UQ_ERR_NOMEM, "out of memory for %d calibration bins", n_bins);
    }
    const double step = 1.0 / (double)B;
    for (size_t b = 0; b < B; b++) edges[b] = (double)b * step;
    edges[B] = 1.0;

    size_t correct = 0;
    double nll = 0.0, brier = 0.0;
    for (size_t i = 0; i < n; i++) {
        const float *p = probs + i * C;
        const size_t y = (size_t)labels[i];
        size_t arg = 0;
        double sq = 0.0;
        for (size_t c = 0; c < C; c++) {
            if (p[c] > p[arg]) arg = c;
            const double d = (double)p[c] - (c == y ? 1.0 : 0.0);
            sq += d * d;
        }
        brier += sq;
        const double py = (double)p[y];
        nll -= log(py > UQ_NLL_FLOOR ? py : UQ_NLL_FLOOR);
        const int ok = arg == y;
        correct += ok;
        /* bin b holds (edges[b], edges[b+1]]; the first also holds 0 */
        const double conf = (double)p[arg];
        long b = (long)ceil(conf * (double)B) - 1;
        if (b < 0) b = 0;
        if (b > (long)B - 1) b = (long)B - 1;
        while (b > 0 && conf <= edges[b]) b--;
        while (b < (long)B - 1 && conf > edges[b + 1]) b++;
        cnt[b]++;
        hit[b] += ok;
        conf_sum[b] += conf;
    }
    double ece = 0.0;
    for (size_t b = 0; b < B; b++) {
        const double mc = cnt[b] ? conf_sum[b] / (double)cnt[b] : NAN;
        const double ma = cnt[b] ? (double)hit[b] / (double)cnt[b] : NAN;
        if (cnt[b]) ece += (double)cnt[b] / (double)n * fabs(ma - mc);
        if (bin_lower) bin_lower[b] = edges[b];
        if (bin_upper) bin_upper[b] = edges[b + 1];
        if (bin_count) bin_count[b] = cnt[b];
        if (bin_conf) bin_conf[b] = mc;
        if (bin_acc) bin_acc[b] = ma;
    }
    res->accuracy = (double)correct / (double)n;
    res->nll = nll / (double)n;
    res->brier = brier / (double)n;
    res->ece = ece;
    uq_free(edges); uq_free(conf_sum); uq_free(cnt); uq_free(hit);
    return UQ_OK;
}

/* --------------------------------------------------------- histograms ---- */

uq_status uq_histogram(int64_t *counts, const double *x, size_t n, const double *edges, size_t n_bins) {
    if (n < 1) return uq_fail(UQ_ERR_VALUE, "scores is empty: need at least 1 value");
    if (n_bins < 1) return uq_fail(UQ_ERR_VALUE, "need at least 1 bin (2 edges), got %zu bins", n_bins);
    size_t k;
    if ((k = first_nan(edges, n_bins + 1)) <= n_bins) return uq_fail(UQ_ERR_VALUE, "bin edges contain NaN (at index %zu)", k);
    for (size_t b = 0; b < n_bins; b++)
        if (edges[b] > edges[b + 1])
            return uq_fail(UQ_ERR_VALUE, "bin edges must increase monotonically, got edges[%zu] = %g > edges[%zu] = %g", b,
                           edges[b], b + 1, edges[b + 1]);
    if ((k = first_nan(x, n)) < n) return uq_fail(UQ_ERR_VALUE, "scores contains NaN (first at index %zu)", k);
    for (size_t b = 0; b < n_bins; b++) counts[b] = 0;
    /* numpy counts bin b as #(x < e[b+1]) - #(x < e[b]), with "<=" for the last
     * edge: x lands in bin f - 1 where f is the first of e[0..n_bins-1] above x. */
    for (size_t i = 0; i < n; i++) {
        const double v = x[i];
        size_t lo = 0, hi = n_bins; /* first index in [0, n_bins) with edges[idx] > v, else n_bins */
        while (lo < hi) {
            const size_t mid = lo + (hi - lo) / 2;
            if (edges[mid] > v) hi = mid;
            else lo = mid + 1;
        }
        if (lo == n_bins) {
            if (v <= edges[n_bins]) counts[n_bins - 1]++;
        } else if (lo > 0) {
            counts[lo - 1]++;
        }
    }
    return UQ_OK;
}

uq_status uq_histogram_edges(double *edges, double lo, double hi, size_t n_bins) {
    if (n_bins < 1) return uq_fail(UQ_ERR_VALUE, "n_bins must be >= 1, got %zu", n_bins);
    if (!isfinite(lo) || !isfinite(hi)) return uq_fail(UQ_ERR_VALUE, "histogram range [%g, %g] is not finite", lo, hi);
    if (lo > hi) return uq_fail(UQ_ERR_VALUE, "histogram range must have lo <= hi, got [%g, %g]", lo, hi);
    if (lo == hi) lo -= 0.5, hi += 0.5;
    const double delta = hi - lo;
    if (!isfinite(delta)) return uq_fail(UQ_ERR_VALUE, "histogram range [%g, %g] is too wide", lo, hi);
    /* numpy.linspace(lo, hi, n_bins + 1): i * step + lo, the last set to hi */
    const double div = (double)n_bins, step = delta / div;
    for (size_t i = 0; i < n_bins; i++) {
        const double t = step == 0.0 ? (double)i / div * delta : (double)i * step;
        edges[i] = t + lo;
    }
    edges[n_bins] = hi;
    return UQ_OK;
}

static uq_status min_max(const double *x, size_t n, const char *what, double *mn, double *mx) {
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i]))
            return uq_fail(UQ_ERR_VALUE, "%s[%zu] = %g: automatic histogram range needs finite values", what, i, x[i]);
        if (x[i] < *mn) *mn = x[i];
        if (x[i] > *mx) *mx = x[i];
    }
    return UQ_OK;
}

uq_status uq_histogram_shared_edges(double *edges, const double *a, size_t na, const double *b, size_t nb,
                                    size_t n_bins) {
    if (na < 1) return uq_fail(UQ_ERR_VALUE, "a is empty: need at least 1 value");
    double mn = a[0], mx = a[0];
    uq_status st = min_max(a, na, "a", &mn, &mx);
    if (st == UQ_OK && b) st = min_max(b, nb, "b", &mn, &mx);
    if (st) return st;
    return uq_histogram_edges(edges, mn, mx, n_bins);
}
