/* notifications/templates.h — the e-mail templates this service knows.
 *
 * herald's template module renders any template; which ones exist is this service's
 * knowledge: one per notification type (domain.h's type names), shipped as
 * templates/<name>.{subject,html,txt}, with the variables each needs:
 *   email_verification  name, verification_link
 *   password_reset      name, reset_link
 *   welcome             name
 *   security_alert      name, event, time
 */
#ifndef NOTIFICATIONS_TEMPLATES_H
#define NOTIFICATIONS_TEMPLATES_H

#include <stddef.h>

#include "herald/error.h"
#include "herald/template.h"

#define NOTIF_TEMPLATE_EMAIL_VERIFICATION "email_verification"
#define NOTIF_TEMPLATE_PASSWORD_RESET     "password_reset"
#define NOTIF_TEMPLATE_WELCOME            "welcome"
#define NOTIF_TEMPLATE_SECURITY_ALERT     "security_alert"

/* The four names above, in that order (borrowed static strings); *n gets the count. */
const char *const *notif_template_names(size_t *n);

/* Load the four templates from dir into *out (new; close with hd_templates_close). Fails if
 * any is missing or broken: the service refuses to start rather than discover a missing
 * template at 3 a.m. Returns 0 or the first failure of hd_template_load. */
int notif_templates_open(const char *dir, hd_templates **out, hd_error *err);

#endif /* NOTIFICATIONS_TEMPLATES_H */
