#ifndef DSTACK_CYAML_SHIM_H
#define DSTACK_CYAML_SHIM_H
#include <yaml.h>
#endif
