"""Run the scripted expert on PegInsert and save the first episode as an mp4 from the side camera.

    python examples/peg_insert_expert.py [--episodes 5] [--video peg.mp4]
"""

import argparse

import gymnasium as gym
import imageio.v2 as imageio

import skillcell  # noqa: F401  (registers skillcell/PegInsert-v0)
from skillcell.policies import make_expert


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--video", default="peg_insert_expert.mp4")
    args = parser.parse_args()

    env = gym.make("skillcell/PegInsert-v0", render_mode="rgb_array", camera="side")
    expert = make_expert(env)
    for episode in range(args.episodes):
        obs, info = env.reset(seed=episode)
        expert.reset()
        frames = [env.render()] if episode == 0 else []
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(expert(obs))
            done = terminated or truncated
            if episode == 0:
                frames.append(env.render())
        print(f"episode {episode}: success={info['is_success']} depth={info['depth_mm']:.2f} mm "
              f"peak force={info['peak_insertion_force_n']:.1f} N")
        if frames:
            imageio.mimsave(args.video, frames, fps=env.unwrapped.metadata["render_fps"])
            print(f"wrote {args.video} ({len(frames)} frames)")
    env.close()


if __name__ == "__main__":
    main()
