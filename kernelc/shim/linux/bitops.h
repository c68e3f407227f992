/* hypdbg shim: everything is in <hypdbg/shim.h>. */
#include <hypdbg/shim.h>
