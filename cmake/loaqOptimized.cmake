# loaq::optimized — opt-in: loaq::loaq plus the flags loaq's own programs build with, the widest
# SIMD of the build machine (-march=native: Eigen and the xsimd kernels pick it up) and OpenMP
# (the column loop, the statistics and Eigen's GEMMs use every core). Results are bit-identical
# for any thread count. The plain loaq::loaq target stays flag-neutral.
# LOAQ_NATIVE / LOAQ_OPENMP (default ON) turn either part off, e.g. for a portable binary.
if(NOT TARGET loaq::optimized)
  option(LOAQ_NATIVE "loaq::optimized compiles with -march=native" ON)
  option(LOAQ_OPENMP "loaq::optimized links OpenMP" ON)
  add_library(loaq_optimized INTERFACE)
  add_library(loaq::optimized ALIAS loaq_optimized)
  target_link_libraries(loaq_optimized INTERFACE loaq::loaq)
  if(LOAQ_NATIVE)
    include(CheckCXXCompilerFlag)
    check_cxx_compiler_flag(-march=native LOAQ_HAS_MARCH_NATIVE)
    if(LOAQ_HAS_MARCH_NATIVE)
      # With no optimization GCC defines the AVX-512 intrinsics as macros whose casts xsimd 8's
      # batches do not pass: builds without an optimizing build type get -O2.
      target_compile_options(loaq_optimized INTERFACE -march=native
                             $<$<OR:$<CONFIG:Debug>,$<CONFIG:>>:-O2>)
    endif()
  endif()
  if(LOAQ_OPENMP)
    find_package(OpenMP QUIET)
    if(OpenMP_CXX_FOUND)
      target_link_libraries(loaq_optimized INTERFACE OpenMP::OpenMP_CXX)
    endif()
  endif()
endif()
