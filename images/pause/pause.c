/* pause: the process that holds a pod's namespaces (the CRI "sandbox").
 * It sleeps in pause(); as PID 1 of a pod with a shared PID namespace it
 * reaps orphaned children on SIGCHLD; SIGINT or SIGTERM end it with status 0.
 * `pause -v` prints the version. Build: gcc -static -Os -s -o pause pause.c */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAUSE_VERSION "3.10"

static void on_stop(int sig) {
  static const char msg[] = "pause: stopping on signal\n";
  (void)sig;
  (void)!write(STDERR_FILENO, msg, sizeof msg - 1); /* async-signal-safe */
  _exit(0);
}

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) /* reap every exited child */
    ;
}

int main(int argc, char **argv) {
  struct sigaction stop = {.sa_handler = on_stop};
  struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};

  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    printf("pause (pgpilot) %s\n", PAUSE_VERSION);
    return 0;
  }
  if (getpid() != 1)
    fprintf(stderr, "pause: warning: not running as PID 1\n");
  if (sigaction(SIGINT, &stop, NULL) || sigaction(SIGTERM, &stop, NULL) ||
      sigaction(SIGCHLD, &child, NULL)) {
    perror("pause: sigaction");
    return 1;
  }
  for (;;)
    pause();
}
