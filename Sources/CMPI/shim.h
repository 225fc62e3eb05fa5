// Open MPI's C API for Swift. Its handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, MPI_IN_PLACE)
// are macros Swift cannot import, so they come through these inline functions.
#include <mpi.h>

static inline MPI_Comm remat_mpi_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype remat_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype remat_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Op remat_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op remat_mpi_min(void) { return MPI_MIN; }
static inline MPI_Op remat_mpi_max(void) { return MPI_MAX; }
static inline void *remat_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline int remat_mpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
