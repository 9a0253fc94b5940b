#ifndef DSTACK_CLIBSSH2_SHIM_H
#define DSTACK_CLIBSSH2_SHIM_H
#include <errno.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <libssh2.h>
#include <libssh2_sftp.h>
#include <libssh2_publickey.h>

/* libssh2 exposes much of its API as macros, which Swift cannot see. */
static inline int dstack_libssh2_eagain(void) { return LIBSSH2_ERROR_EAGAIN; }
static inline unsigned int dstack_channel_window_default(void) { return LIBSSH2_CHANNEL_WINDOW_DEFAULT; }
static inline int dstack_sftp_s_ifdir(void) { return LIBSSH2_SFTP_S_IFDIR; }
static inline int dstack_sftp_s_ifreg(void) { return LIBSSH2_SFTP_S_IFREG; }
static inline int dstack_sftp_s_iflnk(void) { return LIBSSH2_SFTP_S_IFLNK; }

/*
 * A recv callback for libssh2 that behaves like its default one and also adds
 * the bytes it received to the counter the session's abstract pointer points
 * at. DstackSSH's event loop reads that counter to learn whether a round of
 * libssh2 calls consumed anything from the socket (and so may have queued
 * packets for another channel) before it sleeps in poll().
 */
static inline ssize_t dstack_counting_recv(libssh2_socket_t sock, void *buffer, size_t length,
                                           int flags, void **abstract)
{
    ssize_t rc = recv(sock, buffer, length, flags);
    if (rc < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOENT)
            return -EAGAIN;
        return -errno;
    }
    if (abstract && *abstract)
        *(unsigned long long *)(*abstract) += (unsigned long long)rc;
    return rc;
}

/* Installs dstack_counting_recv on a session whose abstract pointer is an unsigned long long counter. */
static inline void dstack_install_counting_recv(LIBSSH2_SESSION *session)
{
    libssh2_session_callback_set(session, LIBSSH2_CALLBACK_RECV, (void *)dstack_counting_recv);
}
#endif
