"""Benchmark BenchMARL's MARL algorithms on the HIS env: algorithms x schemes x seeds, one report.

    python benchmark.py --algorithms ippo mappo iql qmix vdn isac masac --schemes his --seeds 3 --time-budget 60
    python benchmark.py --algorithms ippo mappo --schemes his cfis iis --frame-budget 64000 --num-ues 10
    python benchmark.py --algorithms iddpg maddpg --frame-budget 32000          # continuous actions
    python benchmark.py ... --ray-address 127.0.0.1:6379                      # the cells on a Ray cluster

Each (algorithm, scheme, seed) cell trains a BenchMARL experiment on the task his/<scheme>
(agents.benchmarl.task, the vectorised env) for the budget, then its greedy policy plays
the PettingZoo env on fixed evaluation seeds; the report gives the normalised score
(U - U_random) / (U_search - U_random) per algorithm and scheme with a 95 % bootstrap interval
over seeds, learning curves against frames and training time, throughput and peak memory, as
CSV, Markdown and PNG (and a W&B run, offline by default). Running the same command again
resumes: finished cells are not run again. See `python benchmark.py --help`.
"""
from his_cli.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
