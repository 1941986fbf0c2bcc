// Typed cuBLAS and cuSOLVER calls for float and double (column-major, 64-bit sizes), each
// returning a Report. Only what the backend uses: GEMM, SYRK, TRMM, GEAM (transposes), SCAL,
// and the Cholesky factor and triangular inverse.
#pragma once

#include <library_types.h>

#include <type_traits>
#include <vector>

#include "runtime.cuh"

namespace loaq {
namespace cuda {
namespace blas {

template <class S>
constexpr cudaDataType data_type() {
  return std::is_same<S, float>::value ? CUDA_R_32F : CUDA_R_64F;
}

// C ← α·op(A)·op(B) + β·C
inline Report gemm(Context& c, cublasOperation_t ta, cublasOperation_t tb, Index m, Index n,
                   Index k, float alpha, const float* A, Index lda, const float* B, Index ldb,
                   float beta, float* C, Index ldc) {
  if (m == 0 || n == 0) return Report::success();
  return check(cublasSgemm_64(c.blas(), ta, tb, m, n, k, &alpha, A, lda, B, ldb, &beta, C, ldc),
               "GEMM");
}
inline Report gemm(Context& c, cublasOperation_t ta, cublasOperation_t tb, Index m, Index n,
                   Index k, double alpha, const double* A, Index lda, const double* B, Index ldb,
                   double beta, double* C, Index ldc) {
  if (m == 0 || n == 0) return Report::success();
  return check(cublasDgemm_64(c.blas(), ta, tb, m, n, k, &alpha, A, lda, B, ldb, &beta, C, ldc),
               "GEMM");
}

// Lower triangle of C ← α·A·Aᵀ + β·C (A is n × k)
inline Report syrk_lower(Context& c, Index n, Index k, float alpha, const float* A, Index lda,
                         float beta, float* C, Index ldc) {
  return check(cublasSsyrk_64(c.blas(), CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, k, &alpha, A, lda,
                              &beta, C, ldc),
               "SYRK");
}
inline Report syrk_lower(Context& c, Index n, Index k, double alpha, const double* A, Index lda,
                         double beta, double* C, Index ldc) {
  return check(cublasDsyrk_64(c.blas(), CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, k, &alpha, A, lda,
                              &beta, C, ldc),
               "SYRK");
}

// C ← α·B·op(L) for lower-triangular L (n × n), B and C m × n (out of place).
inline Report trmm_right_lower(Context& c, cublasOperation_t op, Index m, Index n, float alpha,
                               const float* L, Index ldl, const float* B, Index ldb, float* C,
                               Index ldc) {
  if (m == 0 || n == 0) return Report::success();
  return check(cublasStrmm_64(c.blas(), CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER, op,
                              CUBLAS_DIAG_NON_UNIT, m, n, &alpha, L, ldl, B, ldb, C, ldc),
               "TRMM");
}
inline Report trmm_right_lower(Context& c, cublasOperation_t op, Index m, Index n, double alpha,
                               const double* L, Index ldl, const double* B, Index ldb, double* C,
                               Index ldc) {
  if (m == 0 || n == 0) return Report::success();
  return check(cublasDtrmm_64(c.blas(), CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER, op,
                              CUBLAS_DIAG_NON_UNIT, m, n, &alpha, L, ldl, B, ldb, C, ldc),
               "TRMM");
}

// C ← α·op(A) + β·op(B) (C is m × n); with β = 0 and op(A) = Aᵀ, an out-of-place transpose.
inline Report geam(Context& c, cublasOperation_t ta, cublasOperation_t tb, Index m, Index n,
                   float alpha, const float* A, Index lda, float beta, const float* B, Index ldb,
                   float* C, Index ldc) {
  if (m == 0 || n == 0) return Report::success();
  return check(cublasSgeam_64(c.blas(), ta, tb, m, n, &alpha, A, lda, &beta, B, ldb, C, ldc),
               "GEAM");
}
inline Report geam(Context& c, cublasOperation_t ta, cublasOperation_t tb, Index m, Index n,
                   double alpha, const double* A, Index lda, double beta, const double* B,
                   Index ldb, double* C, Index ldc) {
  if (m == 0 || n == 0) return Report::success();
  return check(cublasDgeam_64(c.blas(), ta, tb, m, n, &alpha, A, lda, &beta, B, ldb, C, ldc),
               "GEAM");
}

inline Report scal(Context& c, Index count, float alpha, float* x) {
  if (count == 0) return Report::success();
  return check(cublasSscal_64(c.blas(), count, &alpha, x, 1), "SCAL");
}
inline Report scal(Context& c, Index count, double alpha, double* x) {
  if (count == 0) return Report::success();
  return check(cublasDscal_64(c.blas(), count, &alpha, x, 1), "SCAL");
}

// Lower Cholesky factor of the n × n matrix A in place. `pivot` is −1 on success, else the first
// pivot (0-based) that is not positive, as the CPU factor reports it.
template <class S>
Report potrf_lower(Context& c, Index n, S* A, DeviceBuffer<char>& work, DeviceBuffer<int>& info,
                   Index& pivot) {
  pivot = -1;
  if (n == 0) return Report::success();
  std::size_t device_bytes = 0, host_bytes = 0;
  LOAQ_CUDA_TRY(check(cusolverDnXpotrf_bufferSize(c.solver(), c.solver_params(),
                                                  CUBLAS_FILL_MODE_LOWER, n, data_type<S>(), A, n,
                                                  data_type<S>(), &device_bytes, &host_bytes),
                      "Cholesky workspace query"));
  if (work.size() < device_bytes) LOAQ_CUDA_TRY(work.resize(device_bytes));
  LOAQ_CUDA_TRY(info.resize(1));
  std::vector<char> host_work(host_bytes);
  LOAQ_CUDA_TRY(check(cusolverDnXpotrf(c.solver(), c.solver_params(), CUBLAS_FILL_MODE_LOWER, n,
                                       data_type<S>(), A, n, data_type<S>(), work.data(),
                                       device_bytes, host_work.data(), host_bytes, info.data()),
                      "Cholesky factorization"));
  int status = 0;
  LOAQ_CUDA_TRY(download(c, info.data(), 1, &status));
  if (status < 0)
    return Report::fail(Status::DeviceError,
                        "cuSOLVER potrf rejected argument " + std::to_string(-status));
  if (status > 0) pivot = Index(status) - 1;  // the leading minor of order `status` failed
  return Report::success();
}

// L⁻¹ in place for the lower-triangular n × n L (non-unit diagonal).
template <class S>
Report invert_lower(Context& c, Index n, S* L, DeviceBuffer<char>& work, DeviceBuffer<int>& info,
                    bool& singular) {
  singular = false;
  if (n == 0) return Report::success();
  std::size_t device_bytes = 0, host_bytes = 0;
  LOAQ_CUDA_TRY(check(cusolverDnXtrtri_bufferSize(c.solver(), CUBLAS_FILL_MODE_LOWER,
                                                  CUBLAS_DIAG_NON_UNIT, n, data_type<S>(), L, n,
                                                  &device_bytes, &host_bytes),
                      "triangular inverse workspace query"));
  if (work.size() < device_bytes) LOAQ_CUDA_TRY(work.resize(device_bytes));
  LOAQ_CUDA_TRY(info.resize(1));
  std::vector<char> host_work(host_bytes);
  LOAQ_CUDA_TRY(check(cusolverDnXtrtri(c.solver(), CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, n,
                                       data_type<S>(), L, n, work.data(), device_bytes,
                                       host_work.data(), host_bytes, info.data()),
                      "triangular inverse"));
  int status = 0;
  LOAQ_CUDA_TRY(download(c, info.data(), 1, &status));
  singular = status > 0;  // an exact zero on the diagonal
  return Report::success();
}

}  // namespace blas
}  // namespace cuda
}  // namespace loaq
