# STRATA_SANITIZE=address,undefined builds everything with those sanitizers and makes any report
# fatal, so a sanitizer finding fails the test that triggered it.
if(STRATA_SANITIZE)
  set(_flags -fsanitize=${STRATA_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_compile_options(${_flags})
  add_link_options(-fsanitize=${STRATA_SANITIZE})
endif()
