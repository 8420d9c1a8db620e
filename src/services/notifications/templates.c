/* notifications/templates.c — the e-mail templates this service knows; see templates.h. */
#include "templates.h"

static const char *const known_names[] = {
    NOTIF_TEMPLATE_EMAIL_VERIFICATION,
    NOTIF_TEMPLATE_PASSWORD_RESET,
    NOTIF_TEMPLATE_WELCOME,
    NOTIF_TEMPLATE_SECURITY_ALERT,
};

const char *const *notif_template_names(size_t *n)
{
    if (n != NULL)
        *n = sizeof known_names / sizeof known_names[0];
    return known_names;
}

int notif_templates_open(const char *dir, hd_templates **out, hd_error *err)
{
    return hd_templates_open_names(dir, known_names, sizeof known_names / sizeof known_names[0],
                                   out, err);
}
