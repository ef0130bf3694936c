/*
 * ptyrun: run a command on a new pseudo-terminal, on purpose, to test what a VMM does when
 * its stdio is a terminal (issue #9).
 *
 *   ptyrun [--size=ROWSxCOLS] [--resize-at=MARKER:ROWSxCOLS] [--term-at=MARKER]
 *          [--type-at=MARKER:TEXT] OUTFILE MODEFILE -- COMMAND [ARGS...]
 *
 * The command gets the pty's slave as its controlling terminal and fds 0, 1, 2; everything
 * it writes is copied, unchanged, from the master to OUTFILE. When the output first contains
 * MARKER: --resize-at sets the pty's size (the kernel sends SIGWINCH), --term-at sends SIGTERM
 * to the command, --type-at writes TEXT into the terminal. MODEFILE gets two lines, the
 * terminal's mode (like `stty -g`) before the command ran and after it ended. Exit status:
 * the command's (128+N for signal N), 2 on a setup error.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define MAX_OUT (16 << 20)

static void die(const char *what)
{
    fprintf(stderr, "ptyrun: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void parse_size(const char *text, struct winsize *ws)
{
    unsigned rows, cols;
    if (sscanf(text, "%ux%u", &rows, &cols) != 2) {
        fprintf(stderr, "ptyrun: bad size '%s' (ROWSxCOLS)\n", text);
        exit(2);
    }
    memset(ws, 0, sizeof(*ws));
    ws->ws_row = (unsigned short)rows;
    ws->ws_col = (unsigned short)cols;
}

static void write_mode(FILE *f, int fd)
{
    struct termios t;
    if (tcgetattr(fd, &t) != 0)
        die("tcgetattr");
    fprintf(f, "%x:%x:%x:%x", (unsigned)t.c_iflag, (unsigned)t.c_oflag, (unsigned)t.c_cflag,
            (unsigned)t.c_lflag);
    for (int i = 0; i < NCCS; i++)
        fprintf(f, ":%x", (unsigned)t.c_cc[i]);
    fprintf(f, "\n");
}

/* A MARKER:VALUE option: split at the first ':'. */
static char *split(char *spec)
{
    char *colon = strchr(spec, ':');
    if (colon == NULL) {
        fprintf(stderr, "ptyrun: '%s' needs MARKER:VALUE\n", spec);
        exit(2);
    }
    *colon = '\0';
    return colon + 1;
}

int main(int argc, char **argv)
{
    struct winsize size = {.ws_row = 24, .ws_col = 80};
    char *resize_marker = NULL, *term_marker = NULL, *type_marker = NULL, *type_text = NULL;
    struct winsize resize = {0};
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0 && argv[i][2] != '\0'; i++) {
        char *a = argv[i];
        if (strncmp(a, "--size=", 7) == 0) {
            parse_size(a + 7, &size);
        } else if (strncmp(a, "--resize-at=", 12) == 0) {
            resize_marker = a + 12;
            parse_size(split(resize_marker), &resize);
        } else if (strncmp(a, "--term-at=", 10) == 0) {
            term_marker = a + 10;
        } else if (strncmp(a, "--type-at=", 10) == 0) {
            type_marker = a + 10;
            type_text = split(type_marker);
        } else {
            fprintf(stderr, "ptyrun: unknown option %s\n", a);
            return 2;
        }
    }
    if (argc - i < 4 || strcmp(argv[i + 2], "--") != 0) {
        fprintf(stderr, "usage: ptyrun [options] OUTFILE MODEFILE -- COMMAND [ARGS...]\n");
        return 2;
    }
    const char *out_path = argv[i], *mode_path = argv[i + 1];
    char **cmd = &argv[i + 3];

    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0)
        die("posix_openpt");
    const char *slave_name = ptsname(master);
    if (slave_name == NULL)
        die("ptsname");
    int slave = open(slave_name, O_RDWR | O_NOCTTY);
    if (slave < 0)
        die("open the pty slave");
    if (ioctl(master, TIOCSWINSZ, &size) != 0)
        die("TIOCSWINSZ");
    FILE *mode = fopen(mode_path, "w");
    FILE *out = fopen(out_path, "w");
    if (mode == NULL || out == NULL)
        die("open the output files");
    write_mode(mode, slave);
    fflush(mode);

    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        setsid();
        if (ioctl(slave, TIOCSCTTY, 0) != 0)
            die("TIOCSCTTY");
        dup2(slave, 0);
        dup2(slave, 1);
        dup2(slave, 2);
        close(master);
        if (slave > 2)
            close(slave);
        execvp(cmd[0], cmd);
        die("exec");
    }

    char *seen = malloc(MAX_OUT);
    size_t seen_len = 0;
    int status = 0, done = 0;
    while (!done) {
        struct pollfd p = {.fd = master, .events = POLLIN};
        int n = poll(&p, 1, 100);
        if (n > 0 && (p.revents & POLLIN)) {
            char buf[4096];
            ssize_t r = read(master, buf, sizeof(buf));
            if (r > 0) {
                fwrite(buf, 1, (size_t)r, out);
                fflush(out);
                if (seen_len + (size_t)r < MAX_OUT) {
                    memcpy(seen + seen_len, buf, (size_t)r);
                    seen_len += (size_t)r;
                    seen[seen_len] = '\0';
                }
            }
        }
        if (resize_marker && memmem(seen, seen_len, resize_marker, strlen(resize_marker))) {
            resize_marker = NULL;
            if (ioctl(master, TIOCSWINSZ, &resize) != 0)
                die("TIOCSWINSZ (resize)");
        }
        if (type_marker && memmem(seen, seen_len, type_marker, strlen(type_marker))) {
            type_marker = NULL;
            if (write(master, type_text, strlen(type_text)) < 0)
                die("write to the terminal");
        }
        if (term_marker && memmem(seen, seen_len, term_marker, strlen(term_marker))) {
            term_marker = NULL;
            kill(pid, SIGTERM);
        }
        if (waitpid(pid, &status, WNOHANG) == pid)
            done = 1;
    }
    /* What the command wrote last is still in the master. */
    for (;;) {
        struct pollfd p = {.fd = master, .events = POLLIN};
        char buf[4096];
        if (poll(&p, 1, 200) <= 0 || !(p.revents & POLLIN))
            break;
        ssize_t r = read(master, buf, sizeof(buf));
        if (r <= 0)
            break;
        fwrite(buf, 1, (size_t)r, out);
    }
    fclose(out);
    write_mode(mode, slave);
    fclose(mode);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
