/* config_tls.c — the TLS settings of a service; see config.h. */
#include "herald/config.h"

#include <stdlib.h>

#include "herald/amqp.h"
#include "herald/amqp_tls.h"
#include "herald/sender.h"
#include "herald/store_tls.h"

int hd_config_apply_database_tls(hd_config *cfg, hd_error *err)
{
    const char *ca = hd_config_get(cfg, "HD_DATABASE_CA_FILE", "");
    if (*ca == '\0')
        return 0;
    const char *keys[] = {"HD_DATABASE_URL", "HD_DATABASE_READ_URL"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *url = hd_config_get(cfg, keys[i], "");
        if (*url == '\0')
            continue;
        char *tls = NULL;
        int rc = hd_store_tls_url(url, ca, &tls, err);
        if (rc < 0)
            return rc;
        rc = hd_config_set(cfg, keys[i], tls);
        free(tls);
        if (rc < 0)
            return hd_error_set(err, rc, "%s: cannot store the TLS URL", keys[i]);
    }
    return 0;
}

int hd_config_amqp_tls(const hd_config *cfg, struct hd_amqp_options *o, hd_error *err)
{
    return hd_amqp_tls_settings(o, hd_config_get(cfg, "HD_AMQP_URL", ""),
                                hd_config_get(cfg, "HD_AMQP_CA_FILE", NULL),
                                hd_config_get(cfg, "HD_AMQP_CERT_FILE", NULL),
                                hd_config_get(cfg, "HD_AMQP_KEY_FILE", NULL), err);
}

int hd_config_smtp_tls(const hd_config *cfg, struct hd_sender_smtp_options *o, hd_error *err)
{
    int rc = hd_smtp_starttls_parse(hd_config_get(cfg, "HD_SMTP_TLS", ""), &o->starttls, err);
    if (rc < 0)
        return rc;
    const char *ca = hd_config_get(cfg, "HD_SMTP_CA_FILE", "");
    o->ca_file = *ca ? ca : NULL;
    return 0;
}
