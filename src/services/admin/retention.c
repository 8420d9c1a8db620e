/* retention.c — herald-admin retention (see admin.h). PLACEHOLDER of the skeleton: replaced by the
 * engineer who builds this group; never merged as is. */
#include "admin/admin.h"

int admin_retention(const hd_config *cfg, int argc, char **argv, const admin_io *io)
{
    (void)cfg;
    (void)argc;
    fprintf(io->err, "herald-admin %s: not built yet\n", argv[0]);
    return ADMIN_USAGE;
}
