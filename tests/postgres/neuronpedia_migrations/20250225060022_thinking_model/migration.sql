-- AlterTable
ALTER TABLE "Model" ADD COLUMN     "thinking" BOOLEAN NOT NULL DEFAULT false;
