/* tutorial.c — see tutorial.h. */
#include "tutorial.h"

#include <stdio.h>
#include <stdlib.h>

const char *tutorial_require_env(const char *name)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0') {
        fprintf(stderr,
                "%s is not set: this chapter needs the servers. Start them (make servers-up) "
                "and source the env file it prints.\n",
                name);
        return NULL;
    }
    return v;
}
