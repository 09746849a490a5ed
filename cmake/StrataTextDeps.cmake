# Oniguruma (the regex engine Hugging Face tokenizers uses) and utf8proc (Unicode normalisation)
# for the text layer. Found with find_path/find_library rather than pkg-config so a build against
# Debian packages unpacked into a prefix (CMAKE_PREFIX_PATH, as on the GPU machine) works too.
find_path(STRATA_ONIGURUMA_INCLUDE_DIR oniguruma.h)
find_library(STRATA_ONIGURUMA_LIBRARY onig)
find_path(STRATA_UTF8PROC_INCLUDE_DIR utf8proc.h)
find_library(STRATA_UTF8PROC_LIBRARY utf8proc)
foreach(_var STRATA_ONIGURUMA_INCLUDE_DIR STRATA_ONIGURUMA_LIBRARY STRATA_UTF8PROC_INCLUDE_DIR
             STRATA_UTF8PROC_LIBRARY)
  if(NOT ${_var})
    message(FATAL_ERROR "${_var} not found: install libonig-dev and libutf8proc-dev "
                        "(scripts/setup.sh does it)")
  endif()
endforeach()

add_library(strata_oniguruma INTERFACE IMPORTED)
target_include_directories(strata_oniguruma INTERFACE ${STRATA_ONIGURUMA_INCLUDE_DIR})
target_link_libraries(strata_oniguruma INTERFACE ${STRATA_ONIGURUMA_LIBRARY})
add_library(strata_utf8proc INTERFACE IMPORTED)
target_include_directories(strata_utf8proc INTERFACE ${STRATA_UTF8PROC_INCLUDE_DIR})
target_link_libraries(strata_utf8proc INTERFACE ${STRATA_UTF8PROC_LIBRARY})

# cpp-httplib for `strata serve`. Debian builds it as a shared library (libcpp-httplib.so; the
# header only declares), so it is found like the others and linked. Debian's library is built
# with CPPHTTPLIB_OPENSSL_SUPPORT (its cpp-httplib.pc), which changes the layout of the client
# classes and adds a last member to Request; the server classes Strata uses do not depend on it.
# The macro is defined when the OpenSSL headers are there (the client side, used by the tests,
# then matches the library); without them (the GPU machine's unpacked .debs) the server still
# builds and runs and the client tests skip themselves (STRATA_HTTPLIB_CLIENT undefined). The
# zlib and brotli macros only declare compressor classes the library uses internally.
find_path(STRATA_HTTPLIB_INCLUDE_DIR httplib.h)
find_library(STRATA_HTTPLIB_LIBRARY cpp-httplib)
if(NOT STRATA_HTTPLIB_INCLUDE_DIR OR NOT STRATA_HTTPLIB_LIBRARY)
  message(FATAL_ERROR "cpp-httplib not found (httplib.h, libcpp-httplib.so): install "
                      "libcpp-httplib-dev (scripts/setup.sh does it)")
endif()
add_library(strata_httplib INTERFACE IMPORTED)
target_include_directories(strata_httplib INTERFACE ${STRATA_HTTPLIB_INCLUDE_DIR})
target_link_libraries(strata_httplib INTERFACE ${STRATA_HTTPLIB_LIBRARY})
find_path(STRATA_OPENSSL_INCLUDE_DIR openssl/ssl.h)
if(STRATA_OPENSSL_INCLUDE_DIR)
  target_include_directories(strata_httplib INTERFACE ${STRATA_OPENSSL_INCLUDE_DIR})
  target_compile_definitions(strata_httplib INTERFACE CPPHTTPLIB_OPENSSL_SUPPORT
                             STRATA_HTTPLIB_CLIENT=1)
else()
  message(STATUS "OpenSSL headers not found: cpp-httplib's client is left out of the tests "
                 "(install libssl-dev to run them)")
endif()
