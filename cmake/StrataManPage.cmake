# Writes the strata(1) man page from the command's own --help texts, so it never drifts from the
# options: cmake -DSTRATA=path/to/strata -DVERSION=0.2.0 -DOUTPUT=strata.1 -P StrataManPage.cmake
# (run at build time by cmake/StrataInstall.cmake; no help2man needed).
function(strata_help out)
  execute_process(COMMAND ${STRATA} ${ARGN} --help OUTPUT_VARIABLE text RESULT_VARIABLE result
                  ERROR_QUIET)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "${STRATA} ${ARGN} --help failed (${result})")
  endif()
  # The usage line names the build path of the binary: show the installed name.
  string(REGEX REPLACE "Usage: [^ \n]*strata" "Usage: strata" text "${text}")
  string(REPLACE "\\" "\\e" text "${text}")           # roff escapes
  string(REGEX REPLACE "\n([.'])" "\n\\\\&\\1" text "${text}")  # lines starting with . or '
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

strata_help(main)
string(REGEX MATCH "Subcommands:\n(.*)" _ "${main}")
string(REGEX MATCHALL "\n  [a-z]+ " commands "\n${CMAKE_MATCH_1}")
string(TIMESTAMP date "%Y-%m-%d" UTC)
set(page ".TH STRATA 1 \"${date}\" \"strata ${VERSION}\" \"User Commands\"
.SH NAME
strata \\- run neural networks whose weights do not fit on one GPU
.SH SYNOPSIS
.B strata
[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]
.SH DESCRIPTION
.nf
${main}
.fi
")
foreach(command ${commands})
  string(STRIP "${command}" command)
  strata_help(help ${command})
  string(TOUPPER "${command}" title)
  string(APPEND page ".SH ${title}\n.nf\n${help}\n.fi\n")
endforeach()
string(APPEND page ".SH FILES
.TP
.I /usr/share/strata/models/stories260K
the built-in model, used when no model folder is given
.SH SEE ALSO
/usr/share/doc/strata/README.md, /usr/share/doc/strata/packaging.md
")
file(WRITE ${OUTPUT} "${page}")
