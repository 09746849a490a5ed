# STRATA_GIT_COMMIT: the short commit of the source tree at configure time, "unknown" outside git
# (a tarball) or without git. `strata --version` prints it (src/ops/build_info.cc).
set(STRATA_GIT_COMMIT unknown)
find_package(Git QUIET)
if(GIT_FOUND AND EXISTS ${PROJECT_SOURCE_DIR}/.git)
  execute_process(COMMAND ${GIT_EXECUTABLE} rev-parse --short HEAD
                  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                  OUTPUT_VARIABLE _commit OUTPUT_STRIP_TRAILING_WHITESPACE
                  RESULT_VARIABLE _result ERROR_QUIET)
  if(_result EQUAL 0 AND _commit)
    set(STRATA_GIT_COMMIT ${_commit})
  endif()
endif()
