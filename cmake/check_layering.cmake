# check_layering.cmake — herald (the patterns) must not depend on herald-service (HTTP,
# metrics, settings, templates, senders): a program that only wants the outbox links
# neither libmicrohttpd nor libcurl, and that holds only while no file of herald includes a
# header of herald-service or of its dependencies.
#
#   cmake -DFILES="a.c;b.h" -DMODULES="http;metrics" -DDEPS="microhttpd.h" -P check_layering.cmake
#
# FILES: the files of herald; MODULES: the modules of herald-service (module m owns
# herald/m.h and herald/m_*.h); DEPS: headers of herald-service's own dependencies.
# Fails (exit status 1) listing every offending include.
set(bad "")
foreach(f ${FILES})
  file(STRINGS "${f}" lines REGEX "^[ \t]*#[ \t]*include")
  foreach(line ${lines})
    foreach(m ${MODULES})
      if(line MATCHES "[<\"]herald/${m}(_[a-z0-9_]*)?\\.h[>\"]")
        list(APPEND bad "${f}: ${line}")
      endif()
    endforeach()
    foreach(d ${DEPS})
      string(REPLACE "." "\\." d_re "${d}")
      if(line MATCHES "[<\"]${d_re}[>\"]")
        list(APPEND bad "${f}: ${line}")
      endif()
    endforeach()
  endforeach()
endforeach()
if(bad)
  list(JOIN bad "\n  " text)
  list(JOIN MODULES ", " modules)
  message(FATAL_ERROR "herald must not include herald-service (${modules}) or its "
                      "dependencies; move the module to herald-service or drop the include:\n  ${text}")
endif()
