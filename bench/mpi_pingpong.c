/* OpenMPI's same-host round trip of add(3, 3), for bench_shm to print beside dj's in the same
 * placement: rank 0 sends two doubles, rank 1 answers their sum. Built only when CMake finds an
 * MPI (Debian: openmpi-bin libopenmpi-dev). Usage: mpirun -np 2 bench_mpi_pingpong ROUNDS;
 * rank 0 prints the seconds per round trip after a warm-up of the same length: the fastest of
 * five stretches of ROUNDS / 5, as bench_shm times dj and the flag floor. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static double round_trips(int rank, int rounds) {
  double args[2] = {3, 3}, sum = 0;
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = MPI_Wtime();
  for (int i = 0; i < rounds; ++i) {
    if (rank == 0) {
      MPI_Send(args, 2, MPI_DOUBLE, 1, 0, MPI_COMM_WORLD);
      MPI_Recv(&sum, 1, MPI_DOUBLE, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      if (sum != 6) MPI_Abort(MPI_COMM_WORLD, 1);
    } else {
      MPI_Recv(args, 2, MPI_DOUBLE, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      sum = args[0] + args[1];
      MPI_Send(&sum, 1, MPI_DOUBLE, 0, 0, MPI_COMM_WORLD);
    }
  }
  return (MPI_Wtime() - t0) / rounds;
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int rounds = argc > 1 ? atoi(argv[1]) : 0;
  if (size != 2 || rounds <= 0) {
    if (rank == 0) fprintf(stderr, "usage: mpirun -np 2 bench_mpi_pingpong ROUNDS (ROUNDS > 0)\n");
    MPI_Finalize();
    return 2;
  }
  round_trips(rank, rounds); /* warm-up */
  int per_stretch = rounds / 5 > 0 ? rounds / 5 : 1;
  double seconds = 1e9;
  for (int stretch = 0; stretch < 5; ++stretch) {
    double s = round_trips(rank, per_stretch);
    if (s < seconds) seconds = s;
  }
  if (rank == 0) printf("%.9g\n", seconds);
  MPI_Finalize();
  return 0;
}
