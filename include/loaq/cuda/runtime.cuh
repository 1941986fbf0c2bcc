// The CUDA runtime side of the GPU backend: CUDA, cuBLAS and cuSOLVER errors as Reports, owning
// device buffers and matrices, and the Context (stream and library handles) every GPU call uses.
// Like the rest of loaq the backend never throws: allocation failures and library errors come
// back as Status::DeviceError with what failed and what to do.
#pragma once

#ifndef __CUDACC__
#error "loaq/cuda/ headers hold CUDA kernels: compile this file with nvcc (a .cu file, or LANGUAGE CUDA)"
#endif
#ifndef __CUDACC_RELAXED_CONSTEXPR__
#error "loaq's CUDA backend needs nvcc --expt-relaxed-constexpr (loaq::cuda in CMake adds it)"
#endif

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "../config.hpp"
#include "../status.hpp"

// Returns the Report of `expr` from the enclosing function when it is not a success.
#define LOAQ_CUDA_TRY(expr)                    \
  do {                                         \
    ::loaq::Report loaq_report_ = (expr);      \
    if (!loaq_report_.ok()) return loaq_report_; \
  } while (0)

namespace loaq {
namespace cuda {

inline Report check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Report::success();
  cudaGetLastError();  // clear a non-sticky error so that the next call starts clean
  if (e == cudaErrorMemoryAllocation)
    return Report::fail(Status::DeviceError,
                        std::string(what) + ": out of GPU memory; free memory on the device, "
                                            "solve a smaller layer, or use the CPU solvers");
  return Report::fail(Status::DeviceError,
                      std::string(what) + " failed on the GPU: " + cudaGetErrorString(e));
}
inline Report check(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return Report::success();
  if (s == CUBLAS_STATUS_ALLOC_FAILED)
    return Report::fail(Status::DeviceError, std::string(what) + ": out of GPU memory (cuBLAS)");
  return Report::fail(Status::DeviceError,
                      std::string(what) + " failed in cuBLAS: " + cublasGetStatusString(s));
}
inline Report check(cusolverStatus_t s, const char* what) {
  if (s == CUSOLVER_STATUS_SUCCESS) return Report::success();
  if (s == CUSOLVER_STATUS_ALLOC_FAILED)
    return Report::fail(Status::DeviceError, std::string(what) + ": out of GPU memory (cuSOLVER)");
  return Report::fail(Status::DeviceError, std::string(what) + " failed in cuSOLVER (status " +
                                               std::to_string(int(s)) + ")");
}

// Whether a CUDA device can run the backend; `why` says what is missing when not.
inline bool device_available(std::string* why = nullptr) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    cudaGetLastError();
    if (why) *why = e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device";
    return false;
  }
  return true;
}

// An owning, move-only array in device memory.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), size_(o.size_) {
    o.ptr_ = nullptr;
    o.size_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(size_, o.size_);
    return *this;
  }
  ~DeviceBuffer() { release(); }

  // Contents are unspecified after a resize to another size.
  Report resize(std::size_t count) {
    if (count == size_) return Report::success();
    release();
    if (count == 0) return Report::success();
    void* p = nullptr;
    LOAQ_CUDA_TRY(check(cudaMalloc(&p, count * sizeof(T)), "allocating GPU memory"));
    ptr_ = static_cast<T*>(p);
    size_ = count;
    return Report::success();
  }
  void release() {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    size_ = 0;
  }
  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  std::size_t size() const { return size_; }

 private:
  T* ptr_ = nullptr;
  std::size_t size_ = 0;
};

// A column-major rows × cols matrix in device memory (leading dimension = rows), the layout of
// Eigen's default matrices and of cuBLAS.
template <class Scalar>
class DeviceMatrix {
 public:
  Report resize(Index rows, Index cols) {
    LOAQ_CUDA_TRY(buffer_.resize(std::size_t(rows) * std::size_t(cols)));
    rows_ = rows;
    cols_ = cols;
    return Report::success();
  }
  Index rows() const { return rows_; }
  Index cols() const { return cols_; }
  Index size() const { return rows_ * cols_; }
  Scalar* data() { return buffer_.data(); }
  const Scalar* data() const { return buffer_.data(); }
  Scalar* col(Index j) { return data() + j * rows_; }
  const Scalar* col(Index j) const { return data() + j * rows_; }

 private:
  DeviceBuffer<Scalar> buffer_;
  Index rows_ = 0, cols_ = 0;
};

// The stream and the library handles of one GPU; every backend call takes one. Create it once
// and reuse it: creating handles costs far more than a small solve. Not thread-safe (one host
// thread at a time per Context).
class Context {
 public:
  Context() = default;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context() {
    if (solver_) cusolverDnDestroy(solver_);
    if (params_) cusolverDnDestroyParams(params_);
    if (blas_) cublasDestroy(blas_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  // Idempotent; every backend entry point calls it first.
  Report init() {
    if (ready_) return Report::success();
    std::string why;
    if (!device_available(&why))
      return Report::fail(Status::DeviceError, "no usable CUDA device (" + why +
                                                   "): use the CPU solvers of loaq/loaq.hpp");
    LOAQ_CUDA_TRY(check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "creating a stream"));
    LOAQ_CUDA_TRY(check(cublasCreate(&blas_), "creating the cuBLAS handle"));
    LOAQ_CUDA_TRY(check(cublasSetStream(blas_, stream_), "cublasSetStream"));
    // IEEE float products: no TF32 (it would change the results beyond summation order).
    LOAQ_CUDA_TRY(check(cublasSetMathMode(blas_, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode"));
    LOAQ_CUDA_TRY(check(cusolverDnCreate(&solver_), "creating the cuSOLVER handle"));
    LOAQ_CUDA_TRY(check(cusolverDnSetStream(solver_, stream_), "cusolverDnSetStream"));
    LOAQ_CUDA_TRY(check(cusolverDnCreateParams(&params_), "cusolverDnCreateParams"));
    int device = 0;
    LOAQ_CUDA_TRY(check(cudaGetDevice(&device), "cudaGetDevice"));
    LOAQ_CUDA_TRY(check(cudaDeviceGetAttribute(&shared_optin_, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                               device),
                        "reading the shared-memory limit"));
    ready_ = true;
    return Report::success();
  }

  // Waits for the stream; reports an error any earlier asynchronous call left.
  Report synchronize(const char* what = "a GPU kernel") {
    return check(cudaStreamSynchronize(stream_), what);
  }
  // The last kernel launch's configuration error, if any.
  Report launched(const char* what) { return check(cudaGetLastError(), what); }

  cudaStream_t stream() const { return stream_; }
  cublasHandle_t blas() const { return blas_; }
  cusolverDnHandle_t solver() const { return solver_; }
  cusolverDnParams_t solver_params() const { return params_; }
  std::size_t shared_memory_limit() const { return std::size_t(shared_optin_); }

 private:
  bool ready_ = false;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  cusolverDnHandle_t solver_ = nullptr;
  cusolverDnParams_t params_ = nullptr;
  int shared_optin_ = 48 * 1024;
};

// Host ↔ device copies of Eigen matrices (column-major; the host side is converted to Scalar
// first when it is another type or an expression).
template <class Scalar, class Derived>
Report upload(Context& ctx, const Eigen::MatrixBase<Derived>& M, DeviceMatrix<Scalar>& out) {
  LOAQ_CUDA_TRY(out.resize(M.rows(), M.cols()));
  if (M.size() == 0) return Report::success();
  using Plain = Matrix<Scalar>;
  if constexpr (std::is_same<Derived, Plain>::value) {
    LOAQ_CUDA_TRY(check(cudaMemcpyAsync(out.data(), M.derived().data(), sizeof(Scalar) * M.size(),
                                        cudaMemcpyHostToDevice, ctx.stream()),
                        "copying a matrix to the GPU"));
    return ctx.synchronize("copying a matrix to the GPU");
  } else {
    const Plain copy = M.template cast<Scalar>();
    LOAQ_CUDA_TRY(check(cudaMemcpyAsync(out.data(), copy.data(), sizeof(Scalar) * copy.size(),
                                        cudaMemcpyHostToDevice, ctx.stream()),
                        "copying a matrix to the GPU"));
    return ctx.synchronize("copying a matrix to the GPU");  // `copy` must outlive the copy
  }
}

template <class T>
Report download(Context& ctx, const T* device, std::size_t count, T* host) {
  if (count == 0) return Report::success();
  LOAQ_CUDA_TRY(check(cudaMemcpyAsync(host, device, sizeof(T) * count, cudaMemcpyDeviceToHost,
                                      ctx.stream()),
                      "copying a result from the GPU"));
  return ctx.synchronize("copying a result from the GPU");
}

template <class Scalar>
Report download(Context& ctx, const DeviceMatrix<Scalar>& M, Matrix<Scalar>& out) {
  out.resize(M.rows(), M.cols());
  return download(ctx, M.data(), std::size_t(M.size()), out.data());
}

// dst ← src on the device.
template <class Scalar>
Report copy(Context& ctx, const DeviceMatrix<Scalar>& src, DeviceMatrix<Scalar>& dst) {
  LOAQ_CUDA_TRY(dst.resize(src.rows(), src.cols()));
  if (src.size() == 0) return Report::success();
  return check(cudaMemcpyAsync(dst.data(), src.data(), sizeof(Scalar) * src.size(),
                               cudaMemcpyDeviceToDevice, ctx.stream()),
               "copying a matrix on the GPU");
}

template <class T>
Report upload_array(Context& ctx, const T* host, std::size_t count, DeviceBuffer<T>& out) {
  LOAQ_CUDA_TRY(out.resize(count));
  if (count == 0) return Report::success();
  LOAQ_CUDA_TRY(check(cudaMemcpyAsync(out.data(), host, sizeof(T) * count, cudaMemcpyHostToDevice,
                                      ctx.stream()),
                      "copying to the GPU"));
  return ctx.synchronize("copying to the GPU");
}

}  // namespace cuda
}  // namespace loaq
