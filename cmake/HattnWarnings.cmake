# Warnings for hattn's own code (never for generated or third-party code).
function(hattn_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wshadow -Wnon-virtual-dtor
                                           -Wno-unused-parameter)
  if (HATTN_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif ()
  if (HATTN_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif ()
endfunction()
