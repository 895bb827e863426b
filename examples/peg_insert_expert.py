"""Run the scripted expert on PegInsert and save the first episode as an mp4 from the side camera.

    python examples/peg_insert_expert.py [--episodes 5] [--video peg.mp4]
"""

import argparse

import gymnasium as gym

import skillcell  # noqa: F401  (registers skillcell/PegInsert-v0)
from skillcell.mp4 import VideoWriter
from skillcell.policies import make_expert
from skillcell.rollout import rollout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--video", default="peg_insert_expert.mp4")
    args = parser.parse_args()

    env = gym.make("skillcell/PegInsert-v0", render_mode="rgb_array", camera="side")
    expert = make_expert(env)
    for episode in range(args.episodes):
        if episode == 0:  # a frame after the reset and after every step
            with VideoWriter(args.video, fps=env.unwrapped.metadata["render_fps"]) as video:
                record = rollout(env, expert, seed=episode, on_step=lambda step: video.add(env.render()))
            print(f"wrote {args.video} ({video.frames} frames)")
        else:
            record = rollout(env, expert, seed=episode)
        info = record.final_info
        print(f"episode {episode}: success={info['is_success']} depth={info['depth_mm']:.2f} mm "
              f"peak force={info['peak_insertion_force_n']:.1f} N")
    env.close()


if __name__ == "__main__":
    main()
