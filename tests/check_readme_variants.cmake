# README.md's "Variants" table against the code: every variant of the build's manifest and of
# HATTN_VARIANTS (what hattn_add_kernels accepts) has a row, every row is a known variant, and each
# row's "phases generated" column names every phase the manifest has for it.
#   cmake -DMANIFEST=<build>/generated/hattn_kernels.inc -DREADME=README.md "-DVARIANTS=dense;..." -P this
cmake_minimum_required(VERSION 3.22)  # script mode: IN_LIST and the other current policies
foreach (v IN ITEMS MANIFEST README VARIANTS)
  if (NOT DEFINED ${v})
    message(FATAL_ERROR "check_readme_variants: -D${v}=... is required")
  endif ()
endforeach ()
file(STRINGS "${MANIFEST}" kernels REGEX "^HATTN_KERNEL\\(")
file(READ "${README}" readme)
string(REPLACE ";" "," readme "${readme}")  # semicolons would split CMake lists
string(FIND "${readme}" "\n## Variants\n" start)
if (start EQUAL -1)
  message(FATAL_ERROR "README.md has no '## Variants' section")
endif ()
math(EXPR start "${start} + 13")  # past "\n## Variants\n"
string(SUBSTRING "${readme}" ${start} -1 section)
string(FIND "${section}" "\n## " next)  # the section ends where the next one starts
if (next GREATER 0)
  string(SUBSTRING "${section}" 0 ${next} section)
endif ()
string(REGEX MATCHALL "\n\\| `[a-z_0-9]+` \\|[^\n]*" rows "${section}")

set(table_variants "")
foreach (row IN LISTS rows)
  string(REGEX MATCH "`([a-z_0-9]+)`" _ "${row}")
  set(v "${CMAKE_MATCH_1}")
  list(APPEND table_variants ${v})
  set(row_${v} "${row}")
  if (NOT v IN_LIST VARIANTS)
    message(SEND_ERROR "README.md's Variants table lists '${v}', which is not a variant (${VARIANTS})")
  endif ()
endforeach ()

set(manifest_variants "")
foreach (k IN LISTS kernels)
  string(REGEX MATCH "^HATTN_KERNEL\\([a-z_0-9]+, \"([a-z_0-9]+)\", \"([a-z]+)\"" _ "${k}")
  set(v "${CMAKE_MATCH_1}")
  set(phase "${CMAKE_MATCH_2}")
  # The linear-layer kernel is generated with el (EL and the standard MHA path are built from
  # it): the el row must name it among its kernels.
  if (v STREQUAL "linear")
    set(v el)
    set(phase linear)
  endif ()
  # The paged-cache decode kernels belong to their variant's row (paged_attention,
  # paged_topk_attention, paged_loki_attention).
  if (v MATCHES "^(dense|topk|loki)_paged$")
    set(v ${CMAKE_MATCH_1})
    set(phase paged)
  endif ()
  # Likewise the SparseK operator's kernel belongs to the sparsek row.
  if (v STREQUAL "sparsek_mask")
    set(v sparsek)
    set(phase mask)
  endif ()
  list(APPEND manifest_variants ${v})
  if (NOT v IN_LIST table_variants)
    continue()  # reported below, once
  endif ()
  # The phases column is the fourth cell.
  string(REPLACE "|" ";" cells "${row_${v}}")
  list(GET cells 4 phases)
  if (NOT phases MATCHES "${phase}")
    message(SEND_ERROR "README.md's row for ${v} does not name its ${phase} kernels (${k})")
  endif ()
endforeach ()
list(REMOVE_DUPLICATES manifest_variants)
list(APPEND manifest_variants ${VARIANTS})
list(REMOVE_DUPLICATES manifest_variants)
foreach (v IN LISTS manifest_variants)
  if (NOT v IN_LIST table_variants)
    message(SEND_ERROR "variant '${v}' is built or accepted by hattn_add_kernels but has no row in README.md's Variants table")
  endif ()
endforeach ()
list(LENGTH table_variants n)
message(STATUS "README.md's Variants table: ${n} variants (${table_variants}), checked against ${MANIFEST}")
