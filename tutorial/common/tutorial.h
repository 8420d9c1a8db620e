/* tutorial.h — what every tutorial chapter shares, so that each main.c reads as its story.
 *
 * Linked into every chapter (CMakeLists.txt adds the .c files of tutorial/common to each
 * tutorial-NN executable). Not part of libherald: a chapter is a program, and a program may print.
 */
#ifndef TUTORIAL_COMMON_H
#define TUTORIAL_COMMON_H

/* The value of environment variable `name` (HD_AMQP_URL, HD_SMTP_URL...), a server the
 * chapter needs. When it is unset or empty, prints on stderr which one is missing and how
 * to get the servers (make servers-up, then source the env file it prints), and returns
 * NULL: the chapter returns 1. Borrowed string (the environment's). */
const char *tutorial_require_env(const char *name);

/* Remove dir and the files in it (a chapter's temporary directory: no subdirectories).
 * Best effort: what cannot be removed stays. */
void tutorial_remove_dir(const char *dir);

#endif
