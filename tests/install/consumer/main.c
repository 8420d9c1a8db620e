/* A student's own program, built against an *installed* herald (not the source tree):
 * tests/integration/test_install.sh builds it twice, once with pkg-config and once with
 * CMake's find_package(herald), and checks what it prints. */
#include <herald/herald.h>
#include <stdio.h>

int main(void)
{
    char id[HD_UUID_LEN + 1];
    hd_uuid_v4(id);
    printf("uuid valid: %d\n", hd_uuid_valid(id));
    printf("error name: %s (%s)\n", hd_err_name(HD_EJSON), hd_strerror(HD_EJSON));
    return hd_uuid_valid(id) ? 0 : 1;
}
