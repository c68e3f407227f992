/* hypdbg shim for the v4.5 "hyp.h" include: everything is in <hypdbg/shim.h>. */
#include <hypdbg/shim.h>
