/* A stand-in for Windows' bcryptprimitives.dll, which wine 8 (Debian bookworm's) lacks.
 * Rust's standard library (1.78 and later) imports ProcessPrng from it for its random
 * seeds (HashMap keys), so no Rust test program starts under that wine without it.
 * ProcessPrng fills a buffer from the system's RNG, here through bcrypt.dll's
 * BCryptGenRandom, which wine does implement. Built and installed by .ci/windows.sh. */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
