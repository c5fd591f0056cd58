/* Evaluation metrics of the uqattr C core: OOD detection, calibration and
 * histograms. Plain C11 over double (scores) and float (probabilities) arrays
 * with explicit sizes; outputs first, inputs next, sizes last. Every function
 * validates its inputs and returns UQ_ERR_VALUE with a uq_fail message (NaN,
 * empty arrays, bad sizes) or UQ_ERR_NOMEM; nothing is modified in place. */
#ifndef UQ_METRICS_H
#define UQ_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* ---- OOD detection ----
 * Scores: higher = more likely OOD. ID and OOD samples come as two arrays.
 *
 * auroc     area under the ROC curve with OOD as the positive class: the
 *           trapezoidal ROC over distinct thresholds, i.e. the Mann-Whitney
 *           statistic P(s_ood > s_id) + P(s_ood == s_id) / 2
 *           (= sklearn roc_auc_score(y_ood, s)).
 * aupr_out  average precision with OOD positive, the step-wise sum over
 *           distinct thresholds sum_k (R_k - R_{k-1}) P_k, not trapezoidal
 *           (= sklearn average_precision_score(y_ood, s)).
 * aupr_in   the same with ID positive and negated scores
 *           (= sklearn average_precision_score(y_id, -s)).
 * fpr       false positive rate at the first distinct threshold whose TPR
 *           reaches tpr_level (0.95 for FPR@95TPR), computed as
 *           fpr[np.searchsorted(tpr, tpr_level, side='left')] from sklearn's
 *           roc_curve(y, s, drop_intermediate=False). Two conventions:
 *           UQ_FPR_OOD_POSITIVE (OpenOOD, pytorch-ood): y = y_ood, score s; the
 *             fraction of ID samples flagged as OOD when 95% of OOD is caught;
 *           UQ_FPR_ID_POSITIVE (Hendrycks & Gimpel, ODIN, many papers): y = y_id,
 *             score -s; the fraction of OOD samples accepted as ID when 95% of
 *             ID is kept.
 * Scores may be +-inf (they only rank); NaN is rejected. O(n log n): each
 * array is sorted once (copies), ties are grouped by equal value. */
typedef enum { UQ_FPR_OOD_POSITIVE = 0, UQ_FPR_ID_POSITIVE = 1 } uq_fpr_convention;

typedef struct {
    double auroc, aupr_in, aupr_out, fpr;
} uq_ood_result;

uq_status uq_ood_metrics(uq_ood_result *res, const double *scores_in, size_t n_in, const double *scores_out,
                         size_t n_out, uq_fpr_convention convention, double tpr_level);

/* ---- Calibration ----
 * probs is (n, n_classes) row-major with values in [0, 1] (rows are not
 * checked to sum to 1), labels (n,) in [0, n_classes). With conf_i = max_c p_ic
 * and pred_i = the first argmax:
 *   accuracy = mean(pred == label)
 *   nll      = mean(-log(max(p[label], UQ_NLL_FLOOR)))
 *   brier    = mean_i sum_c (p_ic - onehot_ic)^2   (the multi-class sum, in [0, 2])
 *   ece      = sum_b |B_b| / n * |acc_b - conf_b|
 * over n_bins equal-width bins of confidence with edges e_b = b * (1 / n_bins)
 * (as numpy.linspace(0, 1, n_bins + 1)), bin b = (e_b, e_{b+1}], the first one
 * [0, e_1] (Guo et al. 2017). Per bin (arrays of n_bins, any may be NULL):
 * lower/upper edges, count, mean confidence and accuracy (NaN for an empty bin).
 * Sums are accumulated in double. */
#define UQ_NLL_FLOOR 1e-12

typedef struct {
    double accuracy, nll, brier, ece;
} uq_calib_result;

uq_status uq_calibration(uq_calib_result *res, double *bin_lower, double *bin_upper, int64_t *bin_count,
                         double *bin_conf, double *bin_acc, const float *probs, const int32_t *labels, size_t n,
                         int n_classes, int n_bins);

/* ---- Histograms (numpy.histogram semantics) ----
 * counts[b] = #{x : edges[b] <= x < edges[b+1]}, the last bin closed on the
 * right; values outside [edges[0], edges[n_bins]] are ignored. edges has
 * n_bins + 1 nondecreasing values (no NaN); x has no NaN. Equals
 * numpy.histogram(x, bins=edges)[0] exactly. */
uq_status uq_histogram(int64_t *counts, const double *x, size_t n, const double *edges, size_t n_bins);

/* edges[n_bins + 1] of n_bins equal-width bins over [lo, hi] exactly as
 * numpy.histogram_bin_edges(x, n_bins, range=(lo, hi)) computes them
 * (numpy.linspace; lo == hi is widened to [lo - 0.5, hi + 0.5]). lo <= hi finite. */
uq_status uq_histogram_edges(double *edges, double lo, double hi, size_t n_bins);

/* Shared edges for two arrays (ID vs OOD): uq_histogram_edges over the joint
 * min / max of a and b (b may be NULL with nb = 0); values must be finite. */
uq_status uq_histogram_shared_edges(double *edges, const double *a, size_t na, const double *b, size_t nb,
                                    size_t n_bins);

#endif
