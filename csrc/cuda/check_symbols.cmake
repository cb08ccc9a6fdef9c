# ctest: every jsla::cuda function the torch binding (csrc/torch/cuda.cpp) calls is defined by the
# CUDA kernel library, with the same signature. Where no GPU (and no CUDA build of torch) exists,
# this is the link step's check.
#   cmake -DNM=nm -DOBJ=<binding object> -DLIB=<libjsla_cuda_kernels.a> -P check_symbols.cmake
execute_process(COMMAND ${NM} -C --undefined-only ${OBJ} OUTPUT_VARIABLE needed RESULT_VARIABLE rc1)
execute_process(COMMAND ${NM} -C --defined-only ${LIB} OUTPUT_VARIABLE defined RESULT_VARIABLE rc2)
if(rc1 OR rc2)
  message(FATAL_ERROR "nm failed on ${OBJ} or ${LIB}")
endif()
string(REGEX MATCHALL "jsla::cuda::[^\n]+" needed "${needed}")
list(LENGTH needed count)
if(count EQUAL 0)
  message(FATAL_ERROR "the binding calls no jsla::cuda function: is ${OBJ} the CUDA binding?")
endif()
foreach(symbol IN LISTS needed)
  string(FIND "${defined}" " ${symbol}\n" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "csrc/torch/cuda.cpp calls ${symbol}, which csrc/cuda/*.cu does not define")
  endif()
endforeach()
message(STATUS "the CUDA kernels define all ${count} functions the binding calls")
