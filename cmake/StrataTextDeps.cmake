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
