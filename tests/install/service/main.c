/* A student's service, built against an *installed* herald-service: it renders an e-mail
 * template (service plumbing) and makes an id (the patterns, which herald-service brings
 * along). tests/integration/test_install.sh builds it with pkg-config and with CMake's
 * find_package(herald) and checks what it prints. */
#include <herald/service.h>
#include <stdio.h>

int main(void)
{
    hd_error err;
    hd_error_clear(&err);
    hd_template *tpl = NULL;
    hd_rendered *mail = NULL;
    json_t *vars = json_pack("{s:s}", "name", "Ada");
    int rc = hd_template_parse("welcome", "Welcome, {{name}}", "<p>Hello {{name}}</p>",
                               "Hello {{name}}", &tpl, &err);
    if (rc == 0)
        rc = hd_template_render(tpl, vars, &mail, &err);
    if (rc == 0)
        printf("subject: %s\n", mail->subject);
    else
        printf("template failed: %s (%s)\n", hd_err_name(rc), err.text);
    hd_rendered_free(mail);
    hd_template_free(tpl);
    json_decref(vars);

    /* the patterns come along: herald-service requires herald */
    char id[HD_UUID_LEN + 1];
    hd_uuid_v4(id);
    printf("uuid valid: %d\n", hd_uuid_valid(id));
    return rc == 0 && hd_uuid_valid(id) ? 0 : 1;
}
